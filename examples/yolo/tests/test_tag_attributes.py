"""Control tag attributes that choose how a tag is served, read from a parsed config (no model)."""

import pytest

from control_models.rectangle_labels import RectangleLabelsModel
from control_models.rectangle_labels_obb import RectangleLabelsObbModel
from label_studio_ml.exceptions import LabelConfigError


@pytest.fixture
def served(new_backend):
    """`served(attributes)`: the control model classes serving a RectangleLabels with `attributes`."""
    def control_model_classes(rectangle_attributes: str) -> list:
        config = (f'<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image" '
                  f'{rectangle_attributes}><Label value="plane"/></RectangleLabels></View>')
        return [type(model) for model in new_backend(label_config=config).control_models(strict=False)]
    return control_model_classes


@pytest.mark.parametrize("value", ["true", "True", "1", "yes"])
def test_model_obb_is_read_like_every_boolean_attribute(served, value):
    assert served(f'model_obb="{value}"') == [RectangleLabelsObbModel]


@pytest.mark.parametrize("attributes", ["", 'model_obb="false"', 'model_obb="0"'])
def test_without_model_obb_boxes_are_axis_aligned(served, attributes):
    assert served(attributes) == [RectangleLabelsModel]


@pytest.mark.parametrize("attribute", ["model_obb", "model_skip"])
def test_a_boolean_attribute_that_is_no_boolean_is_a_config_error(served, attribute):
    with pytest.raises(LabelConfigError, match=f'<RectangleLabels name="label">: {attribute}=\'maybe\' is not true/false'):
        served(f'{attribute}="maybe"')


def test_model_skip_leaves_the_tag_out(served):
    assert served('model_skip="1"') == []
