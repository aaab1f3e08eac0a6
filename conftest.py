"""Root of both test suites: make the SDK, the shared test helpers and the YOLO example importable."""

import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
for path in (os.path.join(ROOT, "examples", "yolo"), os.path.join(ROOT, "tests"), ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)
