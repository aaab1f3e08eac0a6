"""`<TimelineLabels>` on a `<Video>`: which frames show what, as ranges of frames per label.

Simple mode (`model_trainable="false"`, default): a YOLO classification model scores every frame;
its classes map to the labels (label map rules) and each run of frames at or above
`model_score_threshold` becomes a region.

Trainable mode (`model_trainable="true"`): the labels are the config's own. Every frame becomes
the classification model's penultimate-layer vector (the input of its Classify head's final
Linear layer: what the model "sees", before it is squeezed into its own classes), cached on disk
per video content and weights. A small bidirectional LSTM per (project, control) learns the labels
from the ranges of each submitted annotation (ANNOTATION_CREATED / ANNOTATION_UPDATED webhooks),
or with Start Training from every annotated task of the project (a background job), and predicts
per-frame label probabilities, turned into ranges like in simple mode. The classifier lives in its
file under MODEL_ROOT, loaded through the process-wide `utils.classifier_cache.classifiers`.
"""

import logging
import os
from typing import List

import numpy as np

from control_models.base import ControlModel
from label_studio_ml.exceptions import BadRequest, LabelConfigError, MLBackendError
from label_studio_ml.parsing import parse_bool
from training.dataset import CannotTrain, choose_annotation
from training.versions import TrainedVersions
from utils.classifier_cache import classifiers
from utils.files import content_digest, exclusive
from utils.inference import LoadedModel
from utils.weights import resolve_in_root
from utils.timeline_classifier import (ClassifierSpec, TimelineClassifier, classifier_file_name,
                                       feature_cache_dir, feature_cache_path, load_cached_features,
                                       merge_columns, ranges_to_multihot, save_cached_features,
                                       timeline_regions)
from utils.video import VideoFrames, frame_rate_attr

logger = logging.getLogger(__name__)

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


class ClassifierNotTrained(LabelConfigError):
    """The config asks for a trainable classifier that has not been trained (for this config) yet:
    the whole request fails, so Label Studio stores no empty prediction and asks again later."""

    status_code = 409


def is_trainable(control) -> bool:
    try:
        return parse_bool(control.attr.get("model_trainable"), False)
    except ValueError:
        raise LabelConfigError(f"<{control.tag} name=\"{control.name}\">: model_trainable must be true or false")


def classify_linear(loaded: LoadedModel):
    """The final Linear of the Classify head in the network Ultralytics' predictor really runs
    (the predictor holds its own prepared copy, built on its first call)."""
    import torch
    from ultralytics.nn.modules.head import Classify

    predictor = loaded.model.predictor
    network = getattr(getattr(predictor, "model", None), "model", None)
    heads = [m for m in network.modules() if isinstance(m, Classify)] if isinstance(network, torch.nn.Module) else []
    if not heads:
        raise LabelConfigError(f"{loaded.name}: trainable TimelineLabels needs PyTorch (.pt) classification weights "
                               "with a Classify head")
    return heads[-1].linear


def penultimate_features(loaded: LoadedModel, frames: List[np.ndarray]) -> np.ndarray:
    """(frames x D) inputs of the classification head's final Linear, captured by a forward pre-hook.

    The hook lives only for this call, on the device's inference thread, so no other request's
    frames end up in the capture.
    """
    captured: List[np.ndarray] = []

    def capture(model):
        if model.predictor is None:
            model.predict(frames[:1], device=loaded.device, verbose=False)
        handle = classify_linear(loaded).register_forward_pre_hook(
            lambda module, inputs: captured.append(inputs[0].detach().float().cpu().numpy()))
        try:
            model.predict(frames, device=loaded.device, verbose=False)
        finally:
            handle.remove()

    loaded.run(capture)
    features = np.concatenate(captured) if captured else np.zeros((0, 0), np.float32)
    if len(features) != len(frames):
        raise RuntimeError(f"{loaded.name}: captured {len(features)} feature vectors for {len(frames)} frames")
    return features


class TimelineLabelsModel(ControlModel):
    control_type = "TimelineLabels"
    object_types = ("Video",)
    ultralytics_tasks = ("classify",)
    default_model = "yolov8n-cls.pt"
    trainable = False

    def __init__(self, control, object_tag, label_interface, context):
        super().__init__(control, object_tag, label_interface, context)
        self.fps = frame_rate_attr(object_tag)

    @classmethod
    def matches(cls, control, object_tag) -> bool:
        return super().matches(control, object_tag) and is_trainable(control) == cls.trainable

    def frame_batches(self, video: VideoFrames, what: str):
        """The video's frames in batches of the settings' size, progress logged as they say."""
        return video.batches(self.context.inference.batch_size, self.context.yolo.video_progress_frames, what=what)

    def predict_video(self, path: str, task: dict) -> List[dict]:
        names = self.model.names
        chunks, labels = [], []
        with VideoFrames(path, default_fps=self.fps) as video:
            for _, frames in self.frame_batches(video, repr(self)):
                results = self.model.predict(frames, self.context.inference.batch_size)
                probs = np.stack([r.probs.data.cpu().numpy() for r in results])
                merged, labels = merge_columns(probs, names, self.label_map)  # only mapped labels are kept
                chunks.append(merged)
        return timeline_regions(np.concatenate(chunks), labels, self.score_threshold, self.from_name, self.to_name)


class TrainableTimelineLabelsModel(TimelineLabelsModel):
    trainable = True
    needs_pytorch = True  # its features are captured inside the PyTorch network
    learns_from_annotations = True

    def __init__(self, control, object_tag, label_interface, context):
        super().__init__(control, object_tag, label_interface, context)
        self.labels = tuple(control.labels or ())
        self.epochs = self._positive_int("model_classifier_epochs", 1000)
        self.sequence_size = self._positive_int("model_classifier_sequence_size", 16)
        self.hidden_size = self._positive_int("model_classifier_hidden_size", 32)
        self.num_layers = self._positive_int("model_classifier_num_layers", 1)
        self.f1_threshold = self.float_attr("model_classifier_f1_threshold", 0.95)
        self.accuracy_threshold = self.float_attr("model_classifier_accuracy_threshold", 1.0)

    def _positive_int(self, name: str, default: int) -> int:
        value = self.int_attr(name, default)
        if value < 1:
            raise LabelConfigError(f"<{self.control_type} name=\"{self.from_name}\">: {name} must be at least 1")
        return value

    def is_usable(self) -> bool:
        if not self.labels:
            logger.error("<TimelineLabels name=\"%s\" model_trainable=\"true\"> has no <Label>; skipped", self.from_name)
        return bool(self.labels)

    # ----- features ---------------------------------------------------------------------------
    def features(self, path: str) -> np.ndarray:
        """Per-frame features of the video at `path`, from the disk cache when this video content
        was already seen with these weights."""
        loaded = self.model
        directory = feature_cache_dir(self.context.yolo.feature_cache_dir, self.context.settings.model_dir)
        cache = feature_cache_path(directory, content_digest(path), content_digest(loaded.path), os.path.basename(path),
                                   loaded.name)
        features = load_cached_features(cache)
        if features is not None:
            logger.debug("%r: features of %s from %s", self, os.path.basename(path), cache)
            return features
        chunks = []
        with VideoFrames(path, default_fps=self.fps) as video:
            for _, frames in self.frame_batches(video, f"{self!r} features of"):
                chunks.append(penultimate_features(loaded, frames).astype(np.float16))
        features = np.concatenate(chunks)
        save_cached_features(cache, features)
        logger.info("%r: %d x %d features of %s cached in %s", self, *features.shape, video.name, cache)
        return features

    # ----- classifier file --------------------------------------------------------------------
    def spec(self, input_size: int) -> ClassifierSpec:
        return ClassifierSpec(input_size, self.hidden_size, self.num_layers, self.sequence_size, self.labels)

    def classifier_path(self) -> str:
        """The project's classifier file of this tag and weights, in MODEL_ROOT."""
        name = classifier_file_name(self.context.project_id, self.model_path, self.from_name)
        return resolve_in_root(name, self.context.yolo.model_root, "classifier file")

    # ----- predict ----------------------------------------------------------------------------
    def predict_video(self, path: str, task: dict) -> List[dict]:
        project = self.context.project_id
        file = self.classifier_path()
        classifier = classifiers.get(file)
        if classifier is None:
            raise ClassifierNotTrained(
                f"<TimelineLabels name=\"{self.from_name}\"> is trainable and has no classifier for project "
                f"{project or '(none)'} yet: train first: submit an annotation with its ranges "
                f"(expected {os.path.basename(file)} in MODEL_ROOT)")
        changes = self.spec(classifier.spec.input_size).differences(classifier.spec)
        if changes:
            raise ClassifierNotTrained(
                f"<TimelineLabels name=\"{self.from_name}\">: the classifier was trained for another config "
                f"({'; '.join(changes)}); train first: submit an annotation to retrain it from scratch")
        features = self.features(path)
        if features.shape[1] != classifier.spec.input_size:
            raise ClassifierNotTrained(f"{os.path.basename(file)} expects {classifier.spec.input_size} features per "
                                       f"frame, {self.model.name} gives {features.shape[1]}; submit an annotation to retrain")
        probs = classifier.predict_proba(features)
        return timeline_regions(probs, self.labels, self.score_threshold, self.from_name, self.to_name)

    # ----- train ------------------------------------------------------------------------------
    def wants_training(self) -> bool:
        """Start Training retrains the classifier on every annotated task (`fit_tasks`)."""
        return True

    def fit(self, event: str, data: dict) -> dict:
        """Train on one annotation's ranges. Returns what happened, with the training metrics."""
        if event not in TRAIN_EVENTS:
            return {"status": "skipped", "reason": f"{event} does not train here; each submitted or updated "
                                                   "annotation does, Start Training retrains on all of them"}
        annotation, task = data.get("annotation") or {}, data.get("task") or {}
        if annotation.get("was_cancelled"):
            return {"status": "skipped", "reason": "cancelled annotation"}
        result = [r for r in annotation.get("result") or [] if r.get("from_name") == self.from_name]
        if not result:
            return {"status": "skipped", "reason": f"the annotation has no '{self.from_name}' ranges"}
        url = (task.get("data") or {}).get(self.value)
        if not isinstance(url, str):
            raise BadRequest(f"Webhook task has no '{self.value}' video URL in its data")
        return self._train_on(result, url, task)

    def fit_tasks(self, tasks: List[dict]) -> dict:
        """Start Training: train on the chosen annotation of every task (as a training from images
        picks it: not cancelled, ground truth first, else the newest). A task whose video cannot be
        had is skipped and counted."""
        trained, skipped, last = 0, {}, {}
        for task in tasks:
            annotation = choose_annotation(task)
            result = [r for r in (annotation or {}).get("result") or [] if r.get("from_name") == self.from_name]
            url = (task.get("data") or {}).get(self.value)
            if not result or not isinstance(url, str):
                skipped[str(task.get("id"))] = f"no '{self.from_name}' ranges" if not result else "no video URL"
                continue
            try:
                last = self._train_on(result, url, task)
            except MLBackendError as exc:
                skipped[str(task.get("id"))] = exc.detail
                continue
            trained += 1
        if not trained:
            raise CannotTrain(f"'{self.from_name}' has no annotated task to learn from; skipped: {skipped}")
        return {**last, "status": "trained", "tasks": trained, "skipped_tasks": len(skipped), "skipped": skipped}

    def _train_on(self, result: List[dict], url: str, task: dict) -> dict:
        path = self.context.local_path(url, task_id=task.get("id"))
        features = self.features(path)
        targets = ranges_to_multihot(result, self.labels, len(features), self.from_name)
        file = self.classifier_path()
        spec = self.spec(features.shape[1])
        with exclusive(file):  # one training of this file at a time, across processes
            # A private copy: the cached instance may be predicting in another thread meanwhile.
            classifier = TimelineClassifier.load(file) if os.path.isfile(file) else None
            reset = spec.differences(classifier.spec) if classifier is not None else []
            if classifier is None or reset:
                if reset:
                    logger.info("%r: training %s from scratch (%s)", self, os.path.basename(file), "; ".join(reset))
                classifier = TimelineClassifier(spec)
            metrics = classifier.fit(features.astype(np.float32), targets, self.epochs, self.f1_threshold,
                                     self.accuracy_threshold)
            classifier.save(file)
            classifiers.put(file, classifier)
        versions = TrainedVersions(self.context.project_id, self.context.store, self.context.yolo.model_root)
        versions.count_classifier_training()
        logger.info("%r: trained %s on task %s: %s", self, os.path.basename(file), task.get("id"), metrics)
        return {"status": "trained", "classifier": os.path.basename(file), "trainings": classifier.trainings,
                "reset": bool(reset), "reset_reasons": reset, "labels": list(self.labels), **metrics}
