"""Helpers of the YOLO backend: model registry, image loading, Ultralytics-to-Label-Studio conversion."""
