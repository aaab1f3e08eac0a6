"""`<Taxonomy>` on an `<Image>`: image classification into a (possibly nested) choice tree."""

import functools

from lxml import etree

from control_models.choices import ChoicesModel
from training.dataset import TrainableTag


@functools.lru_cache(maxsize=128)
def taxonomy_paths(label_config: str, control_name: str) -> dict:
    """`{choice value: [root value, ..., choice value]}` for the Taxonomy named `control_name`."""
    root = etree.fromstring(label_config)
    paths = {}

    def walk(element, prefix):
        for child in element:
            if child.tag == "Choice":
                value = child.get("alias") or child.get("value")
                path = prefix + [value]
                paths.setdefault(value, path)
                walk(child, path)

    for control in root.iter("Taxonomy"):
        if control.get("name") == control_name:
            walk(control, [])
    return paths


class TaxonomyModel(ChoicesModel):
    control_type = "Taxonomy"
    region_type = "taxonomy"

    def label_paths(self):
        return taxonomy_paths(self.label_interface.config, self.from_name)

    def trainable_tag(self) -> TrainableTag:
        """Every choice of the tree is a class (an annotation teaches the leaf of its path)."""
        return TrainableTag(self.from_name, "classify", tuple(self.label_paths()))
