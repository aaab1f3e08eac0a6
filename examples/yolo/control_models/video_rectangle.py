"""`<VideoRectangle>` on a `<Video>`: object detection + multi-object tracking, one region per track.

The labels come from the `<Labels>` tag on the same video (VideoRectangle itself has none).
The detector runs on batches of frames (`YOLO_BATCH_SIZE`) streamed from the file, holding the
model's inference lock one batch at a time; the tracker (see `utils.tracking`) is fed frame by frame.
"""

import logging
from typing import Dict

from control_models.base import ControlModel
from label_studio_ml.label_config import build_label_map
from utils.tracking import TrackCollector, build_tracker, track_regions, tracker_config
from utils.video import VideoFrames, frame_rate_attr

logger = logging.getLogger(__name__)


class VideoRectangleModel(ControlModel):
    control_type = "VideoRectangle"
    object_types = ("Video",)
    ultralytics_tasks = ("detect", "pose", "segment")  # any model with boxes
    default_model = "yolov8n.pt"

    def __init__(self, control, object_tag, label_interface, context):
        super().__init__(control, object_tag, label_interface, context)
        self.conf = self.float_attr("model_conf", 0.25)
        self.iou = self.float_attr("model_iou", 0.7)
        self.tracker_name = self.attr("model_tracker", "botsort")
        self.fps = frame_rate_attr(object_tag)

    def labels_control(self):
        """The first `<Labels>` tag whose toName includes this video."""
        for control in self.label_interface.controls:
            if control.tag == "Labels" and self.to_name in (control.to_name or []):
                return control
        return None

    @property
    def label_map(self) -> Dict[str, str]:
        if self._label_map is None:
            labels = self.labels_control()
            if labels is None:
                logger.error("<VideoRectangle name=\"%s\">: no <Labels toName=\"%s\"> to label its tracks with; skipped",
                             self.from_name, self.to_name)
                self._label_map = {}
            else:
                self._label_map = build_label_map(self.label_interface, labels.name, self.model.names.values())
        return self._label_map

    def predict_video(self, path: str, task: dict):
        # config errors before decoding anything
        config = tracker_config(self.tracker_name, self.control.attr, self.context.yolo.model_root)
        names = self.model.names
        class_ids = [i for i, name in names.items() if name in self.label_map]
        collector = TrackCollector()
        size = self.context.inference.batch_size
        with VideoFrames(path, default_fps=self.fps) as video:
            tracker = build_tracker(config, video.fps, device=self.model.device)
            for start, frames in video.batches(size, self.context.yolo.video_progress_frames, what=repr(self)):
                results = self.model.predict(frames, size, conf=self.conf, iou=self.iou, classes=class_ids)
                for offset, (frame, result) in enumerate(zip(frames, results)):
                    boxes = result.boxes.cpu().numpy()
                    collector.add(start + offset + 1, tracker.update(boxes, frame), boxes.data[:, :6])
        logger.debug("%r: %d tracks over %d frames of %s", self, len(collector.tracks), video.frames_count, video.name)
        return track_regions(collector.tracks, names, self.label_map, self.target(video.width, video.height),
                             video.frames_count, video.duration)
