"""Every labeling config the README and docs/label-studio-configs.md offer for
copy-paste is valid for Label Studio and is planned into the model calls the
text around it promises."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from label_studio_sdk.label_interface import LabelInterface

from backend.planner import plan_config

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "README.md": [
        # control -> (Rex-Omni task, Label Studio result type)
        {"label": ("detection", "rectanglelabels")},
        {"kp": ("keypoint", "keypointlabels")},  # the box takes each person
        {"bbox": ("ocr_box", "rectangle")},
        {"brush": ("detection", "brushlabels")},  # the clicks are rex_skip
    ],
    "docs/label-studio-configs.md": [
        {"label": ("detection", "rectanglelabels")},
        {"brush": ("detection", "brushlabels")},
        {"kp": ("pointing", "keypointlabels")},
        {
            "kp": ("keypoint", "keypointlabels"),
            "box": ("detection", "rectanglelabels"),  # Car only: Person is kp's
        },
        {"bbox": ("ocr_box", "rectangle")},
    ],
}
"""Per document, per ```xml block in order: what the planner must make of it."""


def _xml_blocks(document: str) -> list[str]:
    text = (ROOT / document).read_text()
    return re.findall(r"```xml\n(.*?)```", text, re.DOTALL)


CASES = [
    pytest.param(document, index, expected, id=f"{document}#{index + 1}")
    for document, blocks in EXPECTED.items()
    for index, expected in enumerate(blocks)
]


def test_every_block_has_an_expectation():
    for document, blocks in EXPECTED.items():
        assert len(_xml_blocks(document)) == len(blocks), document


@pytest.mark.parametrize(("document", "index", "expected"), CASES)
def test_a_documented_config_plans_as_described(document, index, expected):
    config = _xml_blocks(document)[index]
    LabelInterface(config)  # Label Studio's own parser accepts it
    plan = plan_config(config)
    got = {c.control: (c.call.task, c.output) for c in plan.controls}
    assert got == expected, plan.notes


def test_keypoint_instances_get_their_box_where_the_docs_say_so():
    for document, index in (("README.md", 1), ("docs/label-studio-configs.md", 3)):
        plan = plan_config(_xml_blocks(document)[index])
        assert plan.control("kp").box_control == "box", document


def test_ocr_regions_carry_their_label_and_transcription():
    for document, index in (("README.md", 2), ("docs/label-studio-configs.md", 4)):
        bbox = plan_config(_xml_blocks(document)[index]).control("bbox")
        assert (bbox.text_control, bbox.labels_control) == ("transcription", "label")
