"""Label mapping rules (SPEC §5) and config parsing."""

import logging

import pytest

from label_studio_ml.exceptions import BadRequest
from label_studio_ml.label_config import build_label_map, get_label_interface, get_parsed_label_config


def interface(labels_xml):
    return get_label_interface(
        f'<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">{labels_xml}'
        "</RectangleLabels></View>"
    )


def test_predicted_values_exact_and_case_insensitive():
    li = interface('<Label value="Vehicle" predicted_values="car, truck,boat"/><Label value="person"/>'
                   '<Label value="DOG"/><Label value="Unicorn"/>')
    mapping = build_label_map(li, "label", ["person", "car", "truck", "Dog", "cat"])
    assert mapping == {"car": "Vehicle", "truck": "Vehicle", "person": "person", "Dog": "DOG"}


def test_case_insensitive_key_is_the_model_class_name():
    li = interface('<Label value="PERSON"/>')
    assert build_label_map(li, "label", ["Person"]) == {"Person": "PERSON"}


def test_no_overlap_logs_an_error_naming_both_label_sets(caplog):
    li = interface('<Label value="Zebra"/><Label value="Giraffe"/>')
    with caplog.at_level(logging.ERROR):
        assert build_label_map(li, "label", ["circle", "square"]) == {}
    message = caplog.text
    assert "Zebra" in message and "Giraffe" in message and "circle" in message and "square" in message


def test_config_parsing_is_cached_and_bad_xml_is_400():
    xml = '<View><Image name="i" value="$i"/><Choices name="c" toName="i"><Choice value="a"/></Choices></View>'
    assert get_label_interface(xml) is get_label_interface(xml)
    assert get_parsed_label_config(xml)["c"]["labels"] == ["a"]
    with pytest.raises(BadRequest, match="does not parse"):
        get_label_interface("<View><Image name=")
    with pytest.raises(BadRequest, match="does not parse"):
        get_parsed_label_config("<View><Image name=")
