"""Request figures of this process: counts, errors and latency percentiles per endpoint.

Served by `/metrics` as JSON, or in the Prometheus text format (`?format=prometheus` or
`Accept: text/plain`). Each gunicorn worker keeps its own figures.
"""

import math
import threading
import time
from collections import defaultdict, deque
from typing import Dict

_WINDOW = 2048  # latencies kept per endpoint for percentiles


def _percentile(sorted_values, q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


class RequestMetrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.started_at = time.time()
        self._requests = defaultdict(int)
        self._errors = defaultdict(int)  # (endpoint, status class "4xx"/"5xx") -> count
        self._latency = defaultdict(lambda: deque(maxlen=_WINDOW))
        self._latency_sum = defaultdict(float)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[endpoint] += 1
            self._latency[endpoint].append(seconds)
            self._latency_sum[endpoint] += seconds
            if status >= 400:
                self._errors[(endpoint, f"{status // 100}xx")] += 1

    def snapshot(self) -> Dict:
        with self._lock:
            endpoints = {}
            for endpoint, count in self._requests.items():
                latencies = sorted(self._latency[endpoint])
                endpoints[endpoint] = {
                    "requests": count,
                    "errors_4xx": self._errors.get((endpoint, "4xx"), 0),
                    "errors_5xx": self._errors.get((endpoint, "5xx"), 0),
                    "latency_seconds": {
                        "mean": self._latency_sum[endpoint] / count,
                        "p50": _percentile(latencies, 0.50),
                        "p90": _percentile(latencies, 0.90),
                        "p99": _percentile(latencies, 0.99),
                        "max": latencies[-1] if latencies else 0.0,
                    },
                }
            return {"uptime_seconds": time.time() - self.started_at, "endpoints": endpoints}


def to_prometheus(snapshot: Dict, gauges: Dict[str, float]) -> str:
    """Render a `snapshot()` (plus numeric `gauges`) in the Prometheus text exposition format."""
    lines = [
        "# HELP label_studio_ml_uptime_seconds Seconds since this process started serving.",
        "# TYPE label_studio_ml_uptime_seconds gauge",
        f"label_studio_ml_uptime_seconds {snapshot['uptime_seconds']:.3f}",
        "# HELP label_studio_ml_requests_total Requests answered, per endpoint.",
        "# TYPE label_studio_ml_requests_total counter",
    ]
    endpoints = snapshot["endpoints"]
    for endpoint, figures in sorted(endpoints.items()):
        lines.append(f'label_studio_ml_requests_total{{endpoint="{endpoint}"}} {figures["requests"]}')
    lines += ["# HELP label_studio_ml_errors_total Error answers, per endpoint and status class.",
              "# TYPE label_studio_ml_errors_total counter"]
    for endpoint, figures in sorted(endpoints.items()):
        for cls in ("4xx", "5xx"):
            lines.append(f'label_studio_ml_errors_total{{endpoint="{endpoint}",status="{cls}"}} {figures["errors_" + cls]}')
    lines += ["# HELP label_studio_ml_latency_seconds Latency quantiles over the last requests, per endpoint.",
              "# TYPE label_studio_ml_latency_seconds summary"]
    for endpoint, figures in sorted(endpoints.items()):
        for q in ("p50", "p90", "p99"):
            quantile = int(q[1:]) / 100
            lines.append(f'label_studio_ml_latency_seconds{{endpoint="{endpoint}",quantile="{quantile}"}} {figures["latency_seconds"][q]:.6f}')
        lines.append(f'label_studio_ml_latency_seconds_count{{endpoint="{endpoint}"}} {figures["requests"]}')
        lines.append(f'label_studio_ml_latency_seconds_sum{{endpoint="{endpoint}"}} {figures["latency_seconds"]["mean"] * figures["requests"]:.6f}')
    for name, value in sorted(gauges.items()):
        lines += [f"# TYPE label_studio_ml_{name} gauge", f"label_studio_ml_{name} {value}"]
    return "\n".join(lines) + "\n"
