# The YOLO ML backend for Label Studio. Build from the repository root:
#   docker build -t label-studio-ml-yolo .            (or: docker compose up)
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=9090 \
    WORKERS=1 \
    THREADS=4 \
    LOG_LEVEL=INFO \
    MODEL_DIR=/data \
    MODEL_ROOT=/app/models

# Headless OpenCV needs no libGL; glib is the one system library it links.
RUN apt-get update && apt-get install -y --no-install-recommends libglib2.0-0 && rm -rf /var/lib/apt/lists/*

WORKDIR /sdk
COPY setup.py requirements.txt README.md ./
COPY label_studio_ml ./label_studio_ml
COPY examples/yolo/requirements-base.txt examples/yolo/requirements.txt /tmp/
RUN pip install -e . -r /tmp/requirements-base.txt -r /tmp/requirements.txt \
    && (pip uninstall -y opencv-python || true) \
    && python -c "import cv2, label_studio_ml, onnxruntime, ultralytics"

WORKDIR /app
COPY examples/yolo /app
RUN mkdir -p /data /app/models && chmod +x /app/start.sh

EXPOSE 9090
CMD ["/app/start.sh"]
