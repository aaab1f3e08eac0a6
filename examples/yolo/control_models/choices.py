"""`<Choices>` on an `<Image>`: image classification."""

from control_models.base import ControlModel
from label_studio_ml.exceptions import LabelConfigError
from utils.converters import to_choices

CHOICE_MODES = ("single", "single-radio", "multiple")


class ChoicesModel(ControlModel):
    control_type = "Choices"
    ultralytics_tasks = ("classify",)
    default_model = "yolov8n-cls.pt"
    region_type = "choices"

    def __init__(self, control, object_tag, label_interface, context):
        super().__init__(control, object_tag, label_interface, context)
        self.mode = self.attr("choice", "single")
        if self.mode not in CHOICE_MODES:
            raise LabelConfigError(f"<{self.control_type} name=\"{self.from_name}\">: choice={self.mode!r}, "
                             f"expected one of {', '.join(CHOICE_MODES)}")

    def label_paths(self):
        """Each label's path in the choice tree (Taxonomy); flat for Choices."""
        return None

    def predict_options(self) -> dict:
        return {}  # classification has no confidence filter: every class probability comes back

    def regions_from(self, dets, target):
        return to_choices(dets, target, mode=self.mode, kind=self.region_type, paths=self.label_paths())
