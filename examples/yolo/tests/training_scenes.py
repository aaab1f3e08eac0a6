"""Label Studio annotation results of synthetic scenes (known ground truth), shared by the
training tests: percent coordinates of a 320x240 scene, polygons, brush RLE, choices."""

import numpy as np
from label_studio_sdk.converter.brush import mask2rle

WIDTH, HEIGHT = 320, 240


def percent(x, y):
    return [float(x) / WIDTH * 100, float(y) / HEIGHT * 100]


def region(from_name, kind, value, **extra):
    return {"from_name": from_name, "to_name": "image", "type": kind, "value": value,
            "original_width": WIDTH, "original_height": HEIGHT, **extra}


def polygons(objects, from_name="poly"):
    return [region(from_name, "polygonlabels", {"points": [percent(x, y) for x, y in o["polygon"]], "closed": True,
                                                "polygonlabels": [o["label"]]}) for o in objects]


def brushes(objects, from_name="brush"):
    """Brush regions of the objects' `mask`s, RLE-encoded as Label Studio stores them."""
    return [region(from_name, "brushlabels", {"format": "rle", "rle": mask2rle(o["mask"].astype(np.uint8) * 255),
                                              "brushlabels": [o["label"]]}) for o in objects]


def choices(label, from_name="class"):
    return [region(from_name, "choices", {"choices": [label]})]
