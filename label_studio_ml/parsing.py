"""Parsing of the values users write: booleans, scalars, Label Studio project ids."""

from typing import Any, Optional

_TRUE = {"1", "true", "yes", "y", "on", "t"}
_FALSE = {"0", "false", "no", "n", "off", "f", ""}


def parse_bool(value: Any, default: bool = False) -> bool:
    """Interpret `value` ("true", "1", True, None, ...) as a bool; None gives `default`."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def parse_scalar(text: str) -> Any:
    """Turn a command-line or XML string into int, float or bool when it looks like one."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def project_id_from(project: Any) -> Optional[str]:
    """Label Studio sends `"42"`, `"42.1700000000"` or `42`: the id is the part before the first dot."""
    if project is None or project == "":
        return None
    return str(project).split(".", 1)[0]
