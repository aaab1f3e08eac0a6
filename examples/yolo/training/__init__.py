"""Training YOLO models from Label Studio annotations.

- `dataset`: annotated tasks -> an Ultralytics dataset on disk (pure; media access passed in).
- `versions`: where trained versions live under `MODEL_ROOT/trained/`, which one serves, pins.
- `trainer`: one Ultralytics training run -> a new version, published only when not worse.
"""
