"""A request of many tasks holds one batch of decoded images at a time, and decodes each file once.

Memory is measured deterministically: a spy on the decoder counts decodes and, through weak
references, how many decoded images are alive at each decode (the peak that bounds memory).
"""

import threading
import weakref

import pytest

import synthetic
from utils import task_media
from yolo_helpers import box_iou, region_box_px, save_image

BATCH = 4
# Ultralytics' predictor keeps its last batch (its results hold the input arrays) until its next
# call, so while a batch is decoded the previous one may still be alive there: bounded by the batch
# size all the same, where decoding a whole request up front would hold every image of it.
MAX_ALIVE = 2 * BATCH
CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
          'model_path="shapes-det.pt">' + "".join(f'<Label value="{n}"/>' for n in synthetic.DETECTION_CLASSES)
          + '</RectangleLabels></View>')


class DecodeSpy:
    """Wraps the image decoder: every decode, and the most decoded images alive at once."""

    def __init__(self, decode):
        self.decode = decode
        self.paths = []
        self.alive = 0
        self.peak = 0
        # a batch's images are decoded on several threads; re-entrant: `_released` may run inside a
        # `with self._lock` of the same thread when the garbage collector frees an image there
        self._lock = threading.RLock()

    def __call__(self, path, max_pixels):
        with self._lock:
            self.paths.append(path)
        image = self.decode(path, max_pixels)
        with self._lock:
            self.alive += 1
            self.peak = max(self.peak, self.alive)
        weakref.finalize(image, self._released)
        return image

    def _released(self):
        with self._lock:
            self.alive -= 1


@pytest.fixture
def decodes(monkeypatch):
    spy = DecodeSpy(task_media.load_image)
    monkeypatch.setattr(task_media, "load_image", spy)
    return spy


@pytest.fixture
def predict(new_backend, yolo_settings):
    """`predict(tasks)` by a backend predicting `BATCH` tasks at a time."""
    def predict_tasks(tasks):
        return new_backend(label_config=CONFIG, yolo=yolo_settings.replace(yolo_batch_size=BATCH)).predict(tasks)
    return predict_tasks


def scenes(images_dir, count):
    """`count` synthetic detection scenes on disk: [(path, objects)]."""
    out = []
    for seed in range(synthetic.HELDOUT_SEED_START, synthetic.HELDOUT_SEED_START + count):
        image, objects = synthetic.detection_scene(seed)
        out.append((save_image(image, str(images_dir / f"scene-{seed}.png")), objects, image.shape[:2]))
    return out


def assert_boxes_match(prediction, objects, shape):
    height, width = shape
    regions = prediction["result"]
    assert len(regions) == len(objects)
    for obj in objects:
        assert max(box_iou(region_box_px(r["value"], width, height), obj["xyxy"]) for r in regions
                   if r["value"]["rectanglelabels"] == [obj["label"]]) >= 0.5


def test_two_hundred_tasks_of_one_image_decode_it_once(decodes, images_dir, predict):
    ((path, objects, shape),) = scenes(images_dir, 1)
    predictions = predict([{"id": i, "data": {"image": path}} for i in range(200)])
    assert decodes.paths == [path]
    assert len(predictions) == 200 and all(p == predictions[0] for p in predictions)
    assert_boxes_match(predictions[0], objects, shape)


def test_decoded_images_alive_at_once_are_bounded_by_the_batch_size(decodes, images_dir, predict):
    files = scenes(images_dir, 12)
    # Each image named by three tasks in a row: batches of 4 overlap on images at their borders.
    tasks = [{"id": i, "data": {"image": files[i // 3][0]}} for i in range(36)]
    predictions = predict(tasks)
    assert sorted(decodes.paths) == sorted(path for path, _, _ in files)  # each file decoded once
    assert decodes.peak <= MAX_ALIVE
    for task, prediction in zip(tasks, predictions):
        _, objects, shape = files[task["id"] // 3]
        assert_boxes_match(prediction, objects, shape)


def test_many_distinct_images_are_released_batch_by_batch(decodes, images_dir, predict):
    files = scenes(images_dir, 10)
    tasks = [{"id": i, "data": {"image": files[i % 10][0]}} for i in range(30)]  # interleaved: no reuse
    predictions = predict(tasks)
    assert len(decodes.paths) == 30 and decodes.peak <= MAX_ALIVE  # all 30 at once before
    assert [p["result"] for p in predictions[:10]] == [p["result"] for p in predictions[10:20]]


def test_a_broken_file_is_read_once_and_fails_only_its_tasks(decodes, images_dir, predict):
    ((path, objects, shape),) = scenes(images_dir, 1)
    broken = images_dir / "broken.png"
    broken.write_bytes(b"not an image")
    tasks = [{"id": i, "data": {"image": str(broken) if i % 2 else path}} for i in range(10)]
    predictions = predict(tasks)
    assert decodes.paths.count(str(broken)) == 1
    for task, prediction in zip(tasks, predictions):
        if task["id"] % 2:
            assert prediction["result"] == [] and "broken.png" in prediction["error"]
        else:
            assert_boxes_match(prediction, objects, shape)
