"""Synthetic media and the checks of stored predictions shared by the e2e tests."""

import synthetic
from yolo_helpers import save_image

SEEDS = [synthetic.HELDOUT_SEED_START + 500 + i for i in range(4)]
VERSION = "yolo"  # the backend's model_version with MODEL_VERSION unset


def image_config(controls: str) -> str:
    return f'<View><Image name="image" value="$image"/>{controls}</View>'


def labels(names, tag="Label") -> str:
    return "".join(f'<{tag} value="{n}"/>' for n in names)


DETECTION_CONFIG = image_config(f'<RectangleLabels name="label" toName="image" model_path="shapes-det.pt">'
                                f'{labels(synthetic.DETECTION_CLASSES)}</RectangleLabels>')


def write_scenes(directory, scene_fn, prefix, seeds=SEEDS):
    """PNG files of synthetic scenes: `{file name: (path, image, truth)}`."""
    scenes = {}
    for seed in seeds:
        image, truth = scene_fn(seed)
        name = f"{prefix}{seed}.png"
        scenes[name] = (save_image(image, str(directory / name)), image, truth)
    return scenes


def assert_objects_found(regions, objects, iou_of, min_iou=0.5):
    """Every true object has a region of its label with IoU >= min_iou, and nothing else is there."""
    for obj in objects:
        ious = [iou_of(r, obj) for r in regions if r["value"][r["type"]] == [obj["label"]]]
        assert ious and max(ious) >= min_iou, (obj["label"], ious)
    assert len(regions) == len(objects), (len(regions), len(objects))
