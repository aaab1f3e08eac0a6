"""TimelineLabels: per-frame scores -> segments, annotation ranges -> per-frame targets, the
trainable per-frame classifier (a small bidirectional LSTM over YOLO features) and its files.

Frames are 1-based and ranges inclusive in Label Studio; arrays here are 0-based, one row per frame.
"""

import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from utils.files import atomic_write, safe_name

logger = logging.getLogger(__name__)


# ----- pure conversions ---------------------------------------------------------------------------

def segments(mask: Sequence[bool]) -> List[Tuple[int, int]]:
    """Runs of True as 0-based inclusive `(start, end)` pairs."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(start), int(end) - 1) for start, end in zip(edges[::2], edges[1::2])]


def timeline_regions(probs: np.ndarray, labels: Sequence[str], threshold: float,
                     from_name: str, to_name: str) -> List[dict]:
    """`probs` (frames x labels) -> one `timelinelabels` region per run of frames with prob >= threshold,
    scored by the mean probability over its range."""
    probs = np.asarray(probs, dtype=float).reshape(len(probs), len(labels))
    regions = []
    for k, label in enumerate(labels):
        for start, end in segments(probs[:, k] >= threshold):
            regions.append({
                "id": f"{from_name}-{k}-{start + 1}",
                "from_name": from_name,
                "to_name": to_name,
                "type": "timelinelabels",
                "value": {"ranges": [{"start": start + 1, "end": end + 1}], "timelinelabels": [label]},
                "score": float(probs[start:end + 1, k].mean()),
            })
    return regions


def merge_columns(probs: np.ndarray, names: Dict[int, str], label_map: Dict[str, str]) -> Tuple[np.ndarray, List[str]]:
    """Class probabilities (frames x model classes) -> (frames x mapped labels), config order of first
    appearance; several classes mapped to one label (`predicted_values="a,b"`) give it their maximum."""
    labels: List[str] = []
    columns: Dict[str, List[int]] = {}
    for class_id, name in sorted(names.items()):
        label = label_map.get(name)
        if label is None:
            continue
        if label not in columns:
            labels.append(label)
            columns[label] = []
        columns[label].append(class_id)
    probs = np.asarray(probs, dtype=np.float32)
    merged = np.stack([probs[:, columns[label]].max(axis=1) for label in labels], axis=1) if labels else \
        np.zeros((len(probs), 0), np.float32)
    return merged, labels


def ranges_to_multihot(result: Iterable[dict], labels: Sequence[str], frames: int, from_name: str) -> np.ndarray:
    """An annotation's `timelinelabels` items of control `from_name` -> (frames x labels) 0/1 targets.

    Ranges are clipped to the video; labels not in `labels` are ignored (logged).
    """
    index = {label: k for k, label in enumerate(labels)}
    targets = np.zeros((frames, len(labels)), dtype=np.float32)
    for item in result:
        if item.get("from_name") != from_name:
            continue
        value = item.get("value") or {}
        for label in value.get("timelinelabels") or []:
            if label not in index:
                logger.warning("Control '%s': annotation label %r is not in the config %s; ignored", from_name, label, list(labels))
                continue
            for span in value.get("ranges") or []:
                start, end = sorted((int(span["start"]), int(span["end"])))
                start, end = max(start, 1), min(end, frames)
                if start <= end:
                    targets[start - 1:end, index[label]] = 1.0
    return targets


def windows(frames: int, size: int) -> List[Tuple[int, int]]:
    """Half-overlapping `[start, end)` windows of `size` frames covering `frames` (one shorter window
    for a video shorter than `size`)."""
    if frames <= size:
        return [(0, frames)] if frames else []
    stride = max(1, size // 2)
    starts = list(range(0, frames - size + 1, stride))
    if starts[-1] != frames - size:
        starts.append(frames - size)
    return [(s, s + size) for s in starts]


def f1_accuracy(predicted: np.ndarray, truth: np.ndarray) -> Tuple[float, float]:
    """Micro F1 over every (frame, label) and the fraction of (frame, label) pairs right.

    With no positive at all in both, F1 is 1 (nothing to find, nothing invented)."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    tp = np.logical_and(predicted, truth).sum()
    denominator = predicted.sum() + truth.sum()
    f1 = 2.0 * tp / denominator if denominator else 1.0
    accuracy = float((predicted == truth).mean()) if truth.size else 1.0
    return float(f1), accuracy


def classifier_file_name(project: str, model_path: str, control: str) -> str:
    stem = os.path.splitext(os.path.basename(model_path))[0]
    return f"timelinelabels-{safe_name(project or 'none')}-{safe_name(stem)}-{safe_name(control)}.pkl"


# ----- feature cache ------------------------------------------------------------------------------

# Bump when the way features are computed changes, so old cache files are not reused.
FEATURE_FORMAT = 1


def feature_cache_dir(configured: str, model_dir: str) -> str:
    """`configured` (`FEATURE_CACHE_DIR`), else `<model_dir>/feature-cache`."""
    return os.path.abspath(configured) if configured else os.path.join(model_dir, "feature-cache")


def feature_cache_path(directory: str, video_digest: str, model_digest: str, video_name: str = "",
                       model_name: str = "") -> str:
    """Cache file in `directory` of one (video content, model weights) pair; the readable prefix is
    for humans only."""
    key = hashlib.blake2b(f"{FEATURE_FORMAT}:{video_digest}:{model_digest}".encode(), digest_size=16).hexdigest()
    prefix = "-".join(safe_name(os.path.splitext(n)[0], 40) for n in (video_name, model_name) if n)
    return os.path.join(directory, f"{prefix}-{key}.npy" if prefix else f"{key}.npy")


def load_cached_features(path: str) -> Optional[np.ndarray]:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("Feature cache %s is unreadable (%s); recomputing", path, exc)
        return None


def save_cached_features(path: str, features: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, features, allow_pickle=False))


# ----- the classifier -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassifierSpec:
    """What fixes a classifier's shape: any change means training from scratch."""

    input_size: int
    hidden_size: int
    num_layers: int
    sequence_size: int
    labels: Tuple[str, ...]

    def differences(self, other: "ClassifierSpec") -> List[str]:
        mine, theirs = asdict(self), asdict(other)
        return [f"{k} {theirs[k]!r} -> {mine[k]!r}" for k in mine if mine[k] != theirs[k]]


def _network(spec: ClassifierSpec):
    import torch
    from torch import nn

    class TimelineLSTM(nn.Module):
        """LayerNorm'd frame features -> BiLSTM -> one logit per label per frame."""

        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(spec.input_size)
            self.lstm = nn.LSTM(spec.input_size, spec.hidden_size, num_layers=spec.num_layers,
                                batch_first=True, bidirectional=True)
            self.head = nn.Linear(2 * spec.hidden_size, len(spec.labels))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.lstm(self.norm(x))[0])

    return TimelineLSTM()


class TimelineClassifier:
    """Multi-label per-frame classifier over sequences of frame features, trained incrementally."""

    FORMAT = 1
    LEARNING_RATE = 3e-3
    WINDOWS_PER_STEP = 64

    def __init__(self, spec: ClassifierSpec, state: Optional[dict] = None, trainings: int = 0, frames_seen: int = 0):
        import torch

        self.spec = spec
        with torch.random.fork_rng():  # reproducible initial weights without touching global RNG state
            torch.manual_seed(0)
            self.net = _network(spec)
        if state is not None:
            self.net.load_state_dict(state)
        self.net.eval()
        self.trainings = trainings
        self.frames_seen = frames_seen

    # ----- persistence --------------------------------------------------------------------------
    def save(self, path: str) -> None:
        import torch

        payload = {"format": self.FORMAT, "spec": {**asdict(self.spec), "labels": list(self.spec.labels)},
                   "state": self.net.state_dict(), "trainings": self.trainings, "frames_seen": self.frames_seen}
        atomic_write(path, lambda f: torch.save(payload, f))

    @classmethod
    def load(cls, path: str) -> "TimelineClassifier":
        import torch

        payload = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain types only
        if payload.get("format") != cls.FORMAT:
            raise ValueError(f"unknown classifier format {payload.get('format')!r}")
        spec = dict(payload["spec"])
        spec["labels"] = tuple(spec["labels"])
        return cls(ClassifierSpec(**spec), payload["state"], payload.get("trainings", 0), payload.get("frames_seen", 0))

    # ----- inference ----------------------------------------------------------------------------
    def _window_batches(self, features: np.ndarray):
        """Stacks of equal-length windows (all windows share one length) in chunks."""
        spans = windows(len(features), self.spec.sequence_size)
        for i in range(0, len(spans), self.WINDOWS_PER_STEP):
            chunk = spans[i:i + self.WINDOWS_PER_STEP]
            yield chunk, np.stack([features[s:e] for s, e in chunk]).astype(np.float32)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Per-frame label probabilities (frames x labels), averaged over the overlapping windows."""
        import torch

        features = np.asarray(features, dtype=np.float32)
        total = np.zeros((len(features), len(self.spec.labels)), np.float32)
        counts = np.zeros((len(features), 1), np.float32)
        self.net.eval()
        with torch.inference_mode():
            for spans, batch in self._window_batches(features):
                probs = torch.sigmoid(self.net(torch.from_numpy(batch))).numpy()
                for (s, e), p in zip(spans, probs):
                    total[s:e] += p
                    counts[s:e] += 1
        return total / np.maximum(counts, 1)

    # ----- training -----------------------------------------------------------------------------
    def fit(self, features: np.ndarray, targets: np.ndarray, epochs: int, f1_threshold: float,
            accuracy_threshold: float) -> dict:
        """Train on one video's frames (continuing from the current weights) until F1 and accuracy
        on those frames reach their thresholds, or `epochs` passes."""
        import torch

        features = np.asarray(features, dtype=np.float32)
        targets = np.asarray(targets, dtype=np.float32)
        spans = windows(len(features), self.spec.sequence_size)
        x = torch.from_numpy(np.stack([features[s:e] for s, e in spans]))
        y = torch.from_numpy(np.stack([targets[s:e] for s, e in spans]))
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.LEARNING_RATE)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        generator = torch.Generator().manual_seed(self.trainings)
        f1 = accuracy = loss_value = 0.0
        epoch = 0
        self.net.train()
        try:
            for epoch in range(1, max(1, epochs) + 1):
                order = torch.randperm(len(x), generator=generator)
                total_loss, predicted = 0.0, torch.zeros_like(y, dtype=torch.bool)
                for i in range(0, len(order), self.WINDOWS_PER_STEP):
                    idx = order[i:i + self.WINDOWS_PER_STEP]
                    logits = self.net(x[idx])
                    loss = loss_fn(logits, y[idx])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    total_loss += loss.item() * len(idx)
                    predicted[idx] = logits.detach() > 0
                loss_value = total_loss / len(x)
                f1, accuracy = f1_accuracy(predicted.numpy(), y.numpy() > 0.5)
                if f1 >= f1_threshold and accuracy >= accuracy_threshold:
                    break
        finally:
            self.net.eval()
        self.trainings += 1
        self.frames_seen += len(features)
        return {"epochs": epoch, "f1": round(f1, 4), "accuracy": round(accuracy, 4), "loss": round(loss_value, 5),
                "frames": int(len(features)), "early_stopped": bool(f1 >= f1_threshold and accuracy >= accuracy_threshold)}
