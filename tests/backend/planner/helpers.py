"""Label configs and interactive context regions the planner tests share."""

from __future__ import annotations

from converters.keypoint_sets import PERSON


def view(*tags: str, image: str = '<Image name="image" value="$image"/>') -> str:
    return "<View>" + image + "".join(tags) + "</View>"


RECT = (
    '<RectangleLabels name="label" toName="image">'
    '<Label value="Car" predicted_values="car,truck"/><Label value="Person"/>'
    "</RectangleLabels>"
)


OCR_TEMPLATE = view(
    '<Labels name="label" toName="image"><Label value="Text"/>'
    '<Label value="Handwriting"/></Labels>',
    '<Rectangle name="bbox" toName="image" strokeWidth="3"/>',
    '<Polygon name="poly" toName="image" strokeWidth="3"/>',
    '<TextArea name="transcription" toName="image" editable="true" perRegion="true" '
    'required="true" maxSubmissions="1" rows="5" displayMode="region-list"/>',
)


JOINTS = "".join(f'<Label value="{j.title()}"/>' for j in PERSON.joints)


POSE = f'<KeyPointLabels name="kp" toName="image">{JOINTS}</KeyPointLabels>'


PERSON_BOX = (
    '<RectangleLabels name="box" toName="image"><Label value="Person"/>'
    "</RectangleLabels>"
)


def rect_item(rid: str, x: float, label: str = "Car", name: str = "label") -> dict:
    return {
        "id": rid,
        "from_name": name,
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 200,
        "original_height": 100,
        "image_rotation": 0,
        "value": {
            "x": x,
            "y": 10,
            "width": 20,
            "height": 50,
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }


def prompt_item(text: str) -> dict:
    return {
        "id": "p",
        "from_name": "prompt",
        "to_name": "image",
        "type": "textarea",
        "value": {"text": [text]},
    }


PROMPT = (
    '<TextArea name="prompt" toName="image" editable="true" showSubmitButton="true"/>'
)


def kp_item(rid: str, x: float, positive: bool = True, label: str = "Car") -> dict:
    return {
        "id": rid,
        "from_name": "tag2",
        "to_name": "image",
        "type": "keypointlabels",
        "original_width": 1000,
        "original_height": 500,
        "is_positive": positive,
        "value": {"x": x, "y": 50, "width": 0.3, "keypointlabels": [label]},
    }
