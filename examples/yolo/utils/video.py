"""Reading videos frame by frame, so a long video never sits in memory as a whole.

Containers do not always tell the truth: OpenCV's `CAP_PROP_FRAME_COUNT` comes from the header
and may be 0, an estimate, or count frames that cannot be decoded. `VideoFrames` reports the
header's figures up front and the number of frames it really decoded once it has streamed them;
Label Studio should get the decoded count, because predictions refer to decoded frames.
"""

import logging
import math
import os
from typing import Iterator, List, Tuple

import cv2
import numpy as np

from label_studio_ml.exceptions import MLBackendError

logger = logging.getLogger(__name__)

# Label Studio's `<Video frameRate>` default, used when the container has no usable FPS.
DEFAULT_FPS = 24.0


class UnreadableVideo(MLBackendError):
    """The task's file is not a video OpenCV can decode: fails that task only."""

    status_code = 422


class VideoFrames:
    """A video opened for streaming: `batches()` yields `(first frame index, [BGR frames])`.

    After a full pass, `frames_count` and `duration` describe the frames actually decoded.
    """

    def __init__(self, path: str, default_fps: float = DEFAULT_FPS):
        self.path = path
        self.name = os.path.basename(path)
        if not os.path.isfile(path):
            raise UnreadableVideo(f"Video {self.name} does not exist")
        self._capture = cv2.VideoCapture(path)
        if not self._capture.isOpened():
            self._capture.release()
            raise UnreadableVideo(f"Cannot open {self.name} as a video (not a video file, or a codec OpenCV lacks)")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and math.isfinite(fps) and 0 < fps < 1000 else float(default_fps)
        self.header_frames = max(0, int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self.width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.frames_read = 0
        self._finished = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._capture.release()

    @property
    def frames_count(self) -> int:
        """Decoded frames after a full pass; the header's count before."""
        return self.frames_read if self._finished else self.header_frames

    @property
    def duration(self) -> float:
        return self.frames_count / self.fps

    def batches(self, size: int, log_every: int, what: str = "video") -> Iterator[Tuple[int, List[np.ndarray]]]:
        """Batches of `size` frames; progress logged at INFO every `log_every` frames
        (`VIDEO_PROGRESS_FRAMES`), naming the video after `what`."""
        next_log = log_every
        batch: List[np.ndarray] = []
        while True:
            ok, frame = self._capture.read()
            if not ok:
                break
            if not self.frames_read:
                self.height, self.width = frame.shape[:2]
            batch.append(frame)
            self.frames_read += 1
            if len(batch) == size:
                yield self.frames_read - len(batch), batch
                batch = []
            if self.frames_read >= next_log:
                total = f"/{self.header_frames}" if self.header_frames else ""
                logger.info("%s %s: frame %d%s", what, self.name, self.frames_read, total)
                next_log += log_every
        if batch:
            yield self.frames_read - len(batch), batch
        self._finished = True
        if not self.frames_read:
            raise UnreadableVideo(f"No frame of {self.name} could be decoded (not a video, or a codec OpenCV lacks)")
        if self.header_frames and self.header_frames != self.frames_read:
            logger.warning("%s: the container says %d frames, %d were decoded; using %d",
                           self.name, self.header_frames, self.frames_read, self.frames_read)


def frame_rate_attr(object_tag, default: float = DEFAULT_FPS) -> float:
    """The `<Video frameRate>` of the labeling config, Label Studio's own fallback FPS."""
    try:
        value = float(object_tag.attr.get("frameRate", default))
    except (TypeError, ValueError):
        return default
    return value if value > 0 else default

