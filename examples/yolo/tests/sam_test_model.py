"""A Segment Anything checkpoint for tests and benchmarks, made here: no SAM weights can be downloaded.

MobileSAM's architecture (the smallest Ultralytics builds, 10 M parameters) with random weights,
saved as a state dict under a name ending in `mobile_sam.pt`, so `SAM("…mobile_sam.pt")` loads it
exactly as it loads the real `mobile_sam.pt`. Its masks are arbitrary: it tests the plumbing
(loading, prompts, answer format, embedding cache, latency), never segmentation quality.
"""

import os

from yolo_helpers import CACHE_DIR

SAM_TEST_MODEL = "random-mobile_sam.pt"


def sam_test_model() -> str:
    """Path of the checkpoint (made once, about 40 MB, in the test cache; seeded, so always the same)."""
    target = os.path.join(CACHE_DIR, SAM_TEST_MODEL)
    if not os.path.exists(target):
        import torch
        from ultralytics.models.sam.build import build_mobile_sam

        torch.manual_seed(0)
        os.makedirs(CACHE_DIR, exist_ok=True)
        torch.save(build_mobile_sam().state_dict(), target + ".part")
        os.replace(target + ".part", target)
    return target
