"""Training end to end through a real Label Studio 1.23.2: scenes of object kinds the starting
weights do not know (elongated rectangles and ellipses; shapes-det.pt knows circles, squares and
triangles) are uploaded, annotated through Label Studio's API, Start Training is pressed
(`POST /api/ml/<id>/train`), and Retrieve Predictions then stores the new version's predictions,
which must find the held-out scenes' objects."""

import json
import os
import sys

import numpy as np
import pytest
import requests

import synthetic
from checks import image_config, labels, write_scenes
from ls_api import connect_model, create_annotation, create_project, retrieve_predictions, start_training, \
    tasks_of, upload_files
from helpers import wait_until
from servers import yolo_backend_process
from yolo_helpers import box_iou, region_box_px

pytestmark = pytest.mark.e2e

TRAIN_SEEDS = [synthetic.HELDOUT_SEED_START + 700 + i for i in range(32)]
HELDOUT_SEEDS = [synthetic.HELDOUT_SEED_START + 800 + i for i in range(6)]
CONFIG = image_config('<RectangleLabels name="label" toName="image" model_path="shapes-det.pt" model_trainable="true" '
                      'model_epochs="30" model_imgsz="192" model_batch="8" model_train_min_tasks="8">'
                      f'{labels(synthetic.OBB_CLASSES)}</RectangleLabels>')


def box_of(obj, width=320, height=240):
    polygon = np.clip(obj["polygon"], 0, (width, height))
    return (*polygon.min(axis=0), *polygon.max(axis=0))


def rectangle(obj, width=320, height=240):
    x1, y1, x2, y2 = box_of(obj, width, height)
    return {"from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": width,
            "original_height": height, "value": {"x": x1 / width * 100, "y": y1 / height * 100,
                                                 "width": (x2 - x1) / width * 100, "height": (y2 - y1) / height * 100,
                                                 "rotation": 0, "rectanglelabels": [obj["label"]]}}


def matched_share(stored_tasks, scenes):
    """Share of the held-out objects with a stored region of their label at IoU > 0.5."""
    found = total = 0
    for task in stored_tasks:
        _, image, objects = scenes[task["name"]]
        height, width = image.shape[:2]
        regions = [r for p in task["predictions"] for r in p["result"]]
        for obj in objects:
            total += 1
            found += any(r["value"]["rectanglelabels"] == [obj["label"]]
                         and box_iou(region_box_px(r["value"], width, height), box_of(obj, width, height)) > 0.5
                         for r in regions)
    return found / total


def test_start_training_in_label_studio_serves_a_version_that_finds_new_objects(label_studio, e2e_model_root,
                                                                                  tmp_path_factory, tmp_path):
    train = write_scenes(tmp_path, synthetic.obb_scene, "train", seeds=TRAIN_SEEDS)
    heldout = write_scenes(tmp_path, synthetic.obb_scene, "heldout", seeds=HELDOUT_SEEDS)
    settings = {"TRAIN_WORKERS": 0, "DEVICE": "cpu", "YOLO_OFFLINE": 1}
    with yolo_backend_process(label_studio, e2e_model_root, tmp_path_factory.mktemp("training_model_dir"),
                              **settings) as (backend, _):
        project_id = create_project(label_studio, "training", CONFIG)
        uploaded = upload_files(label_studio, project_id, [p for p, _, _ in {**train, **heldout}.values()])
        ml = connect_model(label_studio, project_id, backend.url)

        def heldout_tasks():
            by_id = {t["id"]: t for t in tasks_of(label_studio, project_id)}
            return [dict(by_id[uploaded[name]["id"]], name=name) for name in heldout]

        retrieve_predictions(label_studio, project_id)
        assert matched_share(heldout_tasks(), heldout) == 0  # the starting weights know no such objects

        for name, (_, _, objects) in train.items():
            create_annotation(label_studio, uploaded[name]["id"], [rectangle(o) for o in objects])
        start_training(label_studio, ml["id"])
        versions = wait_until(lambda: (v := requests.get(f"{backend.url}/versions", params={"project": project_id},
                                                         timeout=10).json()["versions"]) != ["yolo"] and v,
                              timeout=600, interval=2, what="a trained version")
        assert versions == ["yolo", "yolo-v1"], backend.log()

        retrieve_predictions(label_studio, project_id)  # a new model version: Label Studio predicts again
        stored = heldout_tasks()
        assert all(p["model_version"] == "yolo-v1" for t in stored for p in t["predictions"][-1:]), stored
        share = matched_share([dict(t, predictions=[p for p in t["predictions"] if p["model_version"] == "yolo-v1"])
                               for t in stored], heldout)
        assert share >= 0.8, (share, backend.log())
        with open(os.path.join(e2e_model_root, "trained", str(project_id), "label", "v1", "metrics.json")) as f:
            record = json.load(f)
        print(f"\nTraining figure: {record['train_tasks']}+{record['val_tasks']} tasks, {record['epochs_run']} epochs at "
              f"imgsz {record['imgsz']}: {record['duration_s'] / 60:.1f} min; held-out objects found 0% -> "
              f"{share:.0%}; validation {record['metrics']}", file=sys.stderr)
