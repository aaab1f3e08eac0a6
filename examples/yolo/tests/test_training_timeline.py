"""Start Training retrains a trainable TimelineLabels classifier on every annotated task of the
project (read from a fake Label Studio), in a background job."""

import requests

from fake_label_studio import LEGACY_TOKEN, make_fake_label_studio
from helpers import serve_in_thread, wait_until
from test_video import (annotation_webhook, assert_learned, own_model_root, predict, results_of,  # noqa: F401
                        trainable_config, video_model_root, videos)


def test_start_training_retrains_timeline_labels_on_every_annotated_task(serve_yolo, backend_settings, yolo_settings,
                                                                        videos, own_model_root):
    config = trainable_config()
    webhook = annotation_webhook(config, videos["paths"]["train"])
    cancelled = {"id": 9, "data": {"video": videos["paths"]["similar"]}, "project": 3,
                 "annotations": [dict(webhook["annotation"], id=90, task=9, was_cancelled=True)]}
    app = make_fake_label_studio()
    app.config["state"]["tasks"].update({7: dict(webhook["task"], annotations=[webhook["annotation"]]), 9: cancelled})
    with serve_in_thread(app) as label_studio, serve_yolo(
            settings=backend_settings.replace(label_studio_url=label_studio, label_studio_api_key=LEGACY_TOKEN),
            yolo=yolo_settings.replace(model_root=str(own_model_root))) as server:
        response = requests.post(server + "/train", json={"project": {"id": 3, "label_config": config}})
        assert response.status_code == 201, response.text
        job_id = response.json()["result"]["jobs"]["events"]["job_id"]
        status = wait_until(lambda: (s := requests.get(f"{server}/jobs/{job_id}").json())["status"]
                            in ("finished", "failed") and s, timeout=120)

        assert status["status"] == "finished", status.get("error")
        result = status["result"]
        assert result["status"] == "trained" and result["tasks"] == 1
        assert result["skipped"] == {"9": "no 'events' ranges"}
        task = [{"id": 8, "data": {"video": videos["paths"]["similar"]}}]
        assert_learned(results_of(predict(server, config, task))[0]["result"], videos["similar"])
