"""converters.tags: the tag table agrees with Label Studio's SDK, with what the
writer writes for each tag and with what the reader reads back."""

import pytest
from label_studio_sdk.label_interface import LabelInterface

from converters.labelstudio.reader import from_labelstudio
from converters.labelstudio.writer import (
    Output,
    to_labelstudio,
    to_labelstudio_prediction,
)
from converters.prediction import Prediction, RegionType
from converters.tags import (
    LABELS_TAG,
    LABELS_TYPE,
    REGION_TAGS,
    REGION_TAGS_BY_TYPE,
    TEXT_TAG,
    TEXT_TYPE,
    Geometry,
    RegionTag,
    geometry_types,
    region_tag,
)
from converters.tasks import Task

W, H = 640, 480

_PREDICTION = {
    Geometry.RECTANGLE: Prediction(type="box", label="Car", coords=(64, 96, 256, 168)),
    Geometry.POLYGON: Prediction(
        type="polygon", label="Car", coords=[(10, 10), (40, 12), (35, 40)]
    ),
    Geometry.BRUSH: Prediction(type="box", label="Car", coords=(10, 20, 30, 60)),
    Geometry.KEYPOINT: Prediction(type="point", label="Car", coords=(320, 240)),
}
"""One prediction each geometry can show."""

_READ_BACK = {
    Geometry.RECTANGLE: RegionType.BOX,
    Geometry.POLYGON: RegionType.POLYGON,
    Geometry.BRUSH: RegionType.BOX,
    Geometry.KEYPOINT: RegionType.POINT,
}
"""The prediction type each geometry's results read back as (a brush as the
box of its mask)."""


def _config(tag: RegionTag) -> str:
    labels = '<Label value="Car"/>' if tag.labelled else ""
    return (
        '<View><Image name="image" value="$image"/>'
        f'<{tag.tag} name="control" toName="image">{labels}</{tag.tag}></View>'
    )


def _results(tag: RegionTag) -> list[dict]:
    """What rexlabel writes for ``tag``: the writer's labelled results, with the
    label removed for a label-less tag (as the backend does)."""
    results = to_labelstudio(
        [_PREDICTION[tag.geometry]],
        from_name="control",
        to_name="image",
        width=W,
        height=H,
        output=tag.labelled_type,
    )
    if not tag.labelled:
        for result in results:
            result["type"] = tag.result_type
            result["value"].pop(tag.labelled_type)
    return results


def test_every_geometry_has_a_labelled_and_a_plain_tag():
    for geometry in Geometry:
        tags = [t for t in REGION_TAGS.values() if t.geometry is geometry]
        assert sorted(t.labelled for t in tags) == [False, True]
        assert geometry_types(geometry) == {t.result_type for t in tags}


def test_tables_by_name_and_by_type_agree():
    assert len(REGION_TAGS_BY_TYPE) == len(REGION_TAGS)
    for name, tag in REGION_TAGS.items():
        assert tag.tag == name and region_tag(name) is tag
        assert REGION_TAGS_BY_TYPE[tag.result_type] is tag
    assert region_tag(LABELS_TAG) is None and region_tag(TEXT_TAG) is None
    assert region_tag("Choices") is None


def test_result_types_are_what_the_sdk_expects_of_each_tag():
    """Label Studio checks a result's ``type`` against its control's tag name."""
    for tag in REGION_TAGS.values():
        assert tag.result_type == tag.tag.lower()
    assert LABELS_TYPE == LABELS_TAG.lower() and TEXT_TYPE == TEXT_TAG.lower()


def test_writer_outputs_are_the_tables_labelled_types():
    labelled = {t.labelled_type for t in REGION_TAGS.values()}
    assert {o.value for o in Output} == labelled | {LABELS_TYPE}


def test_tasks_of_a_tag_are_those_whose_predictions_it_can_show():
    for tag in REGION_TAGS.values():
        points_only = tag.geometry is Geometry.KEYPOINT
        assert (Task.POINTING in tag.tasks) is points_only
        assert (Task.DETECTION in tag.tasks) is not points_only
    assert Task.OCR_POLYGON in REGION_TAGS["PolygonLabels"].tasks
    assert Task.OCR_POLYGON not in REGION_TAGS["RectangleLabels"].tasks


@pytest.mark.parametrize("tag", REGION_TAGS.values(), ids=lambda t: t.tag)
def test_each_tag_is_written_as_its_type_and_read_back(tag):
    results = _results(tag)
    assert [r["type"] for r in results] == [tag.result_type]
    value = results[0]["value"]
    assert (tag.labelled_type in value) is tag.labelled
    prediction = to_labelstudio_prediction(results, model_version="test")
    errors = LabelInterface(_config(tag)).validate_prediction(
        prediction, return_errors=True
    )
    assert errors == []
    parsed = from_labelstudio(results)
    assert parsed.warnings == []
    (back,) = parsed.predictions
    assert back.type is _READ_BACK[tag.geometry]
    assert back.label == ("Car" if tag.labelled else "")


def test_labels_and_text_results_are_read_with_their_region():
    box = Prediction(type="box", label="Text", coords=(64, 96, 256, 168), text="Hi")
    results = to_labelstudio(
        [box],
        from_name="label",
        to_name="image",
        width=W,
        height=H,
        output=LABELS_TYPE,
        geometry_from_name="bbox",
        text_from_name="transcription",
    )
    rectangle = REGION_TAGS["Rectangle"].result_type
    assert [r["type"] for r in results] == [rectangle, LABELS_TYPE, TEXT_TYPE]
    (back,) = from_labelstudio(results).predictions
    assert (back.type, back.label, back.text) == (RegionType.BOX, "Text", "Hi")
