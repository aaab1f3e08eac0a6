"""Labeling-config parsing, cached per XML text, and the label-to-model-class mapping rules.

Label Studio sends the whole config with every request; parsing it once per distinct XML keeps
the SDK's per-request overhead tiny next to a model's forward pass.
"""

import functools
import logging
import threading
from typing import Dict, Iterable, List

from label_studio_sdk._extensions.label_studio_tools.core.label_config import parse_config
from label_studio_sdk.label_interface import LabelInterface

from .exceptions import LabelConfigError

logger = logging.getLogger(__name__)

_CACHE_SIZE = 256


@functools.lru_cache(maxsize=_CACHE_SIZE)
def get_label_interface(label_config: str) -> LabelInterface:
    """The parsed `LabelInterface` for this XML (shared, treat as read-only)."""
    try:
        return LabelInterface(label_config)
    except Exception as exc:
        raise LabelConfigError(f"Labeling config does not parse: {exc}") from exc


@functools.lru_cache(maxsize=_CACHE_SIZE)
def get_parsed_label_config(label_config: str) -> dict:
    """Label Studio's classic dict form: control name -> {type, to_name, inputs, labels, labels_attrs}."""
    if not label_config:
        return {}
    try:
        return parse_config(label_config)
    except Exception as exc:
        raise LabelConfigError(f"Labeling config does not parse: {exc}") from exc


_reported = set()
_reported_lock = threading.Lock()


def _report_once(key, level, message, *args):
    with _reported_lock:
        if key in _reported:
            return
        _reported.add(key)
    logger.log(level, message, *args)


def build_label_map(label_interface: LabelInterface, control_name: str, model_names: Iterable[str]) -> Dict[str, str]:
    """Map model class names to the control's labels (or choices).

    Rules, per `<Label>`/`<Choice>` in config order:
    1. each comma-separated entry of `predicted_values` that is a model class maps that class;
    2. otherwise a label whose value equals a model class maps that class;
    3. otherwise a label equal to a class name ignoring case maps that class (key = model's name).
    Model classes that map to nothing are dropped. An empty result is logged as an error naming
    both label sets, because that is how users learn the model's class names.
    """
    control = label_interface.get_control(control_name)
    names: List[str] = [str(n) for n in model_names]
    by_lower = {}
    for name in names:
        by_lower.setdefault(name.lower(), name)
    label_map: Dict[str, str] = {}
    for label, tag in (getattr(control, "labels_attrs", None) or {}).items():
        predicted = [v.strip() for v in str(tag.attr.get("predicted_values", "")).split(",") if v.strip()]
        matched = [v for v in predicted if v in names]
        for value in predicted:
            if value not in names:
                _report_once(
                    ("unknown-predicted", control_name, value, tuple(names)),
                    logging.WARNING,
                    "Control '%s': predicted_values entry '%s' (label '%s') is not a model class",
                    control_name, value, label,
                )
        if not matched:
            if label in names:
                matched = [label]
            elif label.lower() in by_lower:
                matched = [by_lower[label.lower()]]
        for name in matched:
            label_map.setdefault(name, label)
    labels = list(getattr(control, "labels", None) or [])
    if not label_map:
        _report_once(
            ("empty", control_name, tuple(labels), tuple(names)),
            logging.ERROR,
            "Control '%s' maps no label to the model: config labels %s, model class names %s. "
            "Rename labels or add predicted_values=\"<model class>\" to them.",
            control_name, labels, names,
        )
    else:
        unmapped = [n for n in names if n not in label_map]
        if unmapped:
            _report_once(
                ("unmapped", control_name, tuple(labels), tuple(names)),
                logging.DEBUG,
                "Control '%s': model classes without a label are dropped: %s",
                control_name, unmapped,
            )
    return label_map
