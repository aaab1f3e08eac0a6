"""Smart tools through a real Label Studio 1.23.2: a project with the backend connected as
interactive (`is_interactive`), clicks sent by Label Studio's own `interactive-annotating` API."""

import pytest

import synthetic
from checks import SEEDS, image_config, labels, write_scenes
from ls_api import connect_model, create_project, interactive_annotating, upload_files
from yolo_helpers import brush_region_mask, mask_iou

pytestmark = pytest.mark.e2e

LABELS = labels(synthetic.SEGMENTATION_CLASSES)
CONFIG = image_config(f'<KeyPointLabels name="kp" toName="image" smart="true">{LABELS}</KeyPointLabels>'
                      f'<RectangleLabels name="box" toName="image" smart="true">{LABELS}</RectangleLabels>'
                      f'<BrushLabels name="mask" toName="image" model_path="shapes-seg.pt">{LABELS}</BrushLabels>')


def keypoint(xy, size, label, positive=True):
    """The region Label Studio's smart KeyPointLabels sends for a click (Alt-click: not positive)."""
    width, height = size
    return {"id": "click", "type": "keypointlabels", "from_name": "kp", "to_name": "image", "origin": "manual",
            "original_width": width, "original_height": height, "image_rotation": 0, "is_positive": positive,
            "value": {"x": xy[0] / width * 100, "y": xy[1] / height * 100, "width": 0.5, "keypointlabels": [label]}}


def test_a_click_in_label_studio_answers_the_mask_of_the_clicked_object(label_studio, yolo_backend, tmp_path):
    scenes = write_scenes(tmp_path, synthetic.segmentation_scene, "smart", seeds=SEEDS[:2])
    project_id = create_project(label_studio, "smart tools", CONFIG)
    uploaded = upload_files(label_studio, project_id, [path for path, _, _ in scenes.values()])
    ml = connect_model(label_studio, project_id, yolo_backend.url)
    assert ml["is_interactive"] is True
    for name, (_, image, objects) in scenes.items():
        size = (image.shape[1], image.shape[0])
        for i, obj in enumerate(objects):
            answer = interactive_annotating(label_studio, ml["id"], uploaded[name]["id"],
                                            [keypoint(obj["center"], size, obj["label"])])
            assert "errors" not in answer, answer
            (region,) = answer["data"]["result"]
            assert (region["from_name"], region["type"], region["value"]["brushlabels"]) == \
                ("mask", "brushlabels", [obj["label"]])
            ious = [mask_iou(brush_region_mask(region["value"], *size), o["mask"]) for o in objects]
            assert ious[i] > 0.8 and all(iou < 0.1 for j, iou in enumerate(ious) if j != i), ious
        # an Alt-click alone points at nothing
        answer = interactive_annotating(label_studio, ml["id"], uploaded[name]["id"],
                                        [keypoint(objects[0]["center"], size, objects[0]["label"], positive=False)])
        assert answer["data"]["result"] == []
