"""Decoding images the way Label Studio shows them, refusing decompression bombs before decoding."""

import os

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from label_studio_ml.exceptions import MLBackendError, PayloadTooLarge

# We enforce our own limit (MAX_IMAGE_PIXELS) before decoding; PIL's global guard would only warn.
Image.MAX_IMAGE_PIXELS = None


class UnreadableImage(MLBackendError):
    status_code = 422


def _root_cause(exc: Exception) -> str:
    """The decoder's own complaint: Ultralytics patches `Image.open` to retry unknown files with a
    HEIF plugin, which turns "cannot identify image file" into an unrelated import error."""
    cause = exc
    while cause is not None and not isinstance(cause, UnidentifiedImageError):
        cause = cause.__context__
    return str(cause) if cause is not None else f"{type(exc).__name__}: {exc}"


def load_image(path: str, max_pixels: int) -> np.ndarray:
    """BGR uint8 array of the image at `path`, EXIF orientation applied (as browsers display it);
    an image of more than `max_pixels` (`MAX_IMAGE_PIXELS`) is refused before decoding.

    PIL reads only the header (size check before any decoding); OpenCV decodes, several times
    faster than PIL for JPEG and PNG, applying the EXIF orientation itself. Formats OpenCV cannot
    read (GIF, ...) are decoded by PIL.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    f"Image {os.path.basename(path)} is {width}x{height} = {width * height} pixels, above "
                    f"MAX_IMAGE_PIXELS={max_pixels}"
                )
            bgr = cv2.imread(path, cv2.IMREAD_COLOR)
            if bgr is None:
                rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
                bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    except MLBackendError:
        raise
    except Exception as exc:  # PIL and its plugins raise many kinds for a broken file
        raise UnreadableImage(f"Cannot decode image {os.path.basename(path)}: {_root_cause(exc)}") from exc
    return bgr
