"""converters.labelstudio.writer: the results it writes, their ids and labels."""

import subprocess
import sys

import numpy as np
import pytest

from converters import masks
from converters.labelstudio.base import LabelStudioError
from converters.labelstudio.writer import to_labelstudio, to_labelstudio_prediction
from converters.prediction import Prediction

W, H = 640, 480


def test_rectangle_result_matches_protocol_shape():
    box = Prediction(type="box", label="Car", coords=(64, 96, 256, 168), score=0.91)
    (result,) = to_labelstudio(
        [box], from_name="label", to_name="image", width=W, height=H
    )
    assert result["type"] == "rectanglelabels"
    assert result["from_name"] == "label" and result["to_name"] == "image"
    assert result["original_width"] == W and result["original_height"] == H
    assert result["image_rotation"] == 0
    assert result["score"] == 0.91
    assert result["value"] == {
        "x": 10.0,
        "y": 20.0,
        "width": 30.0,
        "height": 15.0,
        "rotation": 0,
        "rectanglelabels": ["Car"],
    }


def test_percent_coordinates_are_clamped():
    box = Prediction(type="box", label="Car", coords=(-20, -5, 700, 500))
    poly = Prediction(type="polygon", label="Car", coords=[(-1, 5), (650, 5), (5, 490)])
    rect, polygon = to_labelstudio(
        [box, poly], from_name="label", to_name="image", width=W, height=H
    )
    assert rect["value"]["x"] == 0 and rect["value"]["y"] == 0
    assert rect["value"]["width"] == 100 and rect["value"]["height"] == 100
    for x, y in polygon["value"]["points"]:
        assert 0 <= x <= 100 and 0 <= y <= 100
    assert "score" not in rect


def test_ids_are_stable_across_processes_and_unique():
    boxes = [
        Prediction(type="box", label="Car", coords=(10, 10, 50, 50)),
        Prediction(type="box", label="Car", coords=(10, 10, 50, 50)),
        Prediction(type="box", label="Person", coords=(10, 10, 50, 50)),
    ]
    ids = [
        r["id"]
        for r in to_labelstudio(
            boxes, from_name="label", to_name="image", width=W, height=H
        )
    ]
    assert len(set(ids)) == 3
    assert all(i.isalnum() for i in ids)
    code = (
        "from converters.labelstudio.writer import to_labelstudio\n"
        "from converters.prediction import Prediction\n"
        "b=[Prediction(type='box',label='Car',coords=(10,10,50,50))]*2\n"
        "b.append(Prediction(type='box',label='Person',coords=(10,10,50,50)))\n"
        "print(' '.join(r['id'] for r in to_labelstudio(b,from_name='label',"
        "to_name='image',width=640,height=480)))\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=str(_repo_root()),
    )
    assert other.stdout.split() == ids
    # Another control tag gives other ids (results of two tags can share a task).
    again = to_labelstudio(boxes, from_name="other", to_name="image", width=W, height=H)
    assert not set(ids) & {r["id"] for r in again}


def _repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[3]


def test_label_map_dict_callable_and_drop():
    preds = [
        Prediction(type="box", label="car", coords=(1, 1, 5, 5)),
        Prediction(type="box", label="person", coords=(1, 1, 5, 5)),
        Prediction(type="box", label="tree", coords=(1, 1, 5, 5)),
    ]
    out = to_labelstudio(
        preds,
        from_name="label",
        to_name="image",
        width=W,
        height=H,
        label_map={"car": "Car", "tree": None},
    )
    assert [r["value"]["rectanglelabels"] for r in out] == [["Car"], ["person"]]
    out = to_labelstudio(
        preds,
        from_name="label",
        to_name="image",
        width=W,
        height=H,
        label_map=str.title,
    )
    assert [r["value"]["rectanglelabels"][0] for r in out] == ["Car", "Person", "Tree"]


def test_points_cannot_be_rectangles():
    point = Prediction(type="point", label="Car", coords=(5, 5))
    with pytest.raises(LabelStudioError, match=r"prediction 0 \(point 'Car'\)"):
        to_labelstudio(
            [point],
            from_name="label",
            to_name="image",
            width=W,
            height=H,
            output="rectanglelabels",
        )


def test_task_prediction_score_is_mean_of_regions():
    preds = [
        Prediction(type="box", label="Car", coords=(1, 1, 5, 5), score=0.5, text="a"),
        Prediction(type="box", label="Car", coords=(2, 1, 5, 5), score=1.0, text="b"),
    ]
    results = to_labelstudio(
        preds,
        from_name="label",
        to_name="image",
        width=W,
        height=H,
        text_from_name="transcription",
    )
    task = to_labelstudio_prediction(results, model_version="rex-1")
    assert task == {"result": results, "score": 0.75, "model_version": "rex-1"}
    assert to_labelstudio_prediction([], model_version="v")["score"] == 0.0
    with pytest.raises(LabelStudioError, match="model_version"):
        to_labelstudio_prediction([], model_version="")


def test_unknown_output_kind_names_the_choices():
    with pytest.raises(LabelStudioError, match="'ellipse' is not one of: rect"):
        to_labelstudio(
            [], from_name="x", to_name="image", width=W, height=H, output="ellipse"
        )


def test_brush_mask_of_wrong_size_is_refused():
    rle = masks.mask_to_rle(np.ones((10, 10)))
    box = Prediction(type="box", label="Car", coords=(0, 0, 10, 10), mask=rle)
    with pytest.raises(LabelStudioError, match="original size"):
        to_labelstudio(
            [box],
            from_name="brush",
            to_name="image",
            width=W,
            height=H,
            output="brushlabels",
        )
