"""``rexlabel predict`` on the tiny model, end to end through the CLI."""

from __future__ import annotations

import json
import random

import pytest
from PIL import Image

from backend.cli import main


def _predict(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["predict", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_for_several_images(tiny_model_dir, tmp_path, capsys):
    paths = []
    for i, size in enumerate([(112, 112), (200, 150)]):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", size, (30 * i, 100, 200)).save(path)
        paths.append(str(path))
    code, out, _ = _predict(
        capsys,
        *paths,
        "--task",
        "detection",
        "--categories",
        "red square, blue circle",
        "--model",
        str(tiny_model_dir),
        "--engine",
        "transformers",
        "--device",
        "cpu",
        "--max-new-tokens",
        "6",
        "--json",
    )
    assert code == 0
    report = json.loads(out)
    assert report["model"] == str(tiny_model_dir)
    assert [item["image"] for item in report["images"]] == paths
    assert [(i["width"], i["height"]) for i in report["images"]] == [
        (112, 112),
        (200, 150),
    ]
    for item in report["images"]:
        assert item["task"] == "detection"
        assert item["output_tokens"] <= 6
        assert item["finish_reason"] in ("stop", "length", "runaway")
        assert isinstance(item["predictions"], list)
        assert item["timings"]["batch_size"] == 2


@pytest.mark.slow
def test_trained_model_finds_the_shape_and_draws_it(
    trained_model_dir, tmp_path, capsys
):
    from worker.training.synthetic import box_iou, render_shape

    sample = render_shape(random.Random(12345))
    path = tmp_path / "shape.png"
    sample.image.save(path)
    code, out, _ = _predict(
        capsys,
        str(path),
        "--task",
        "detection",
        "--categories",
        sample.phrase,
        "--model",
        str(trained_model_dir),
        "--device",
        "cpu",
        "--json",
        "--draw",
        str(tmp_path / "drawn"),
    )
    assert code == 0
    (item,) = json.loads(out)["images"]
    boxes = [p for p in item["predictions"] if p["type"] == "box"]
    assert boxes, item["raw_text"]
    assert box_iou(boxes[0]["coords"], sample.box) >= 0.5
    assert 0 < boxes[0]["score"] <= 1
    drawn = Image.open(tmp_path / "drawn" / "shape.png")
    assert drawn.size == sample.image.size
    assert drawn.tobytes() != sample.image.tobytes()


def test_table_output(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "a.png"
    Image.new("RGB", (64, 64)).save(path)
    code, out, _ = _predict(
        capsys,
        str(path),
        "--task",
        "pointing",
        "--categories",
        "cat",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "--max-new-tokens",
        "3",
    )
    assert code == 0
    assert out.startswith(f"{path}: ")
    assert "tokens" in out


def test_bad_inputs_exit_2_naming_the_problem(tiny_model_dir, tmp_path, capsys):
    code, _, err = _predict(
        capsys,
        str(tmp_path / "nope.png"),
        "--task",
        "detection",
        "--categories",
        "cat",
        "--model",
        str(tiny_model_dir),
    )
    assert code == 2 and "nope.png" in err
    path = tmp_path / "a.png"
    Image.new("RGB", (64, 64)).save(path)
    code, _, err = _predict(
        capsys,
        str(path),
        "--task",
        "visual_prompting",
        "--box",
        "1,2,3",
        "--model",
        str(tiny_model_dir),
    )
    assert code == 2 and "--box '1,2,3'" in err
    code, _, err = _predict(
        capsys,
        str(path),
        "--task",
        "detection",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
    )
    assert code == 2 and "categor" in err.lower()


def test_tiled_predict_reports_and_draws_its_tiles(tiny_model_dir, tmp_path, capsys):
    from converters.colors import TILE_COLOR

    path = tmp_path / "wide.png"
    Image.new("RGB", (448, 224), (0, 0, 0)).save(path)
    code, out, _ = _predict(
        capsys,
        str(path),
        "--task",
        "detection",
        "--categories",
        "red square",
        "--model",
        str(tiny_model_dir),
        "--device",
        "cpu",
        "--max-new-tokens",
        "6",
        "--tile",
        "on",
        "--tile-size",
        "224",
        "--tile-overlap",
        "0",
        "--json",
        "--draw",
        str(tmp_path / "drawn"),
    )
    assert code == 0
    (item,) = json.loads(out)["images"]
    assert item["tiles"] == [[0, 0, 224, 224], [224, 0, 448, 224]]
    assert item["timings"]["batch_size"] == 3  # two tiles and the whole image
    drawn = Image.open(tmp_path / "drawn" / "wide.png").convert("RGB")
    assert drawn.getpixel((100, 0)) == TILE_COLOR
    assert drawn.getpixel((224, 100)) == TILE_COLOR


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tile-size", "50"], "--tile-size 50: must be a whole number of pixels"),
        (["--tile-overlap", "0.95"], "--tile-overlap 0.95: must be a share"),
    ],
)
def test_bad_tile_flags_are_named(tiny_model_dir, tmp_path, capsys, flags, message):
    path = tmp_path / "a.png"
    Image.new("RGB", (64, 64)).save(path)
    code, _, err = _predict(
        capsys,
        str(path),
        "--task",
        "detection",
        "--categories",
        "cat",
        "--model",
        str(tiny_model_dir),
        *flags,
    )
    assert code == 2 and message in err


def test_tiled_predict_decodes_as_the_worker_does(tmp_path, capsys, monkeypatch):
    # 4000 x 2000 in 2000 px tiles: the worker decodes it at half its area
    # (a tile then holds the model's 2 MP); the CLI now does too, so the
    # engine gets the same images and the regions are the same.
    from common.jobspec import ImageJob, ModelCall
    from common.tile_options import TileOptions
    from tests.worker.test_tiling_step import RedBoxEngine, _scene
    from worker.engines import registry
    from worker.pipeline import run_image_jobs

    path = tmp_path / "wide.png"
    _scene((4000, 2000), [(1000, 1000, 100), (2950, 400, 100)]).save(path)
    engine = RedBoxEngine()
    monkeypatch.setattr(registry, "create_engine", lambda *a: engine)
    tile = ["--tile", "on", "--tile-size", "2000", "--tile-overlap", "0"]
    code, out, err = _predict(
        capsys, str(path), "--task", "detection", "--categories", "red square",
        *tile, "--json",
    )  # fmt: skip
    assert code == 0, err
    (item,) = json.loads(out)["images"]
    assert (item["width"], item["height"]) == (4000, 2000)
    call = ModelCall(
        task="detection",
        categories=["red square"],
        tile={"mode": "on", "size": 2000, "overlap": 0.0},
    )
    worker = RedBoxEngine()
    job = ImageJob(id="1", image=str(path), calls=[call], local_paths=True)
    (result,) = run_image_jobs(worker, [job], tiling=TileOptions.from_settings())
    assert engine.image_sizes == worker.image_sizes
    assert item["tiles"] == result.calls[0].tiles
    cli = sorted(p["coords"] for p in item["predictions"])
    assert cli == sorted(list(p.coords) for p in result.calls[0].predictions)
    assert len(cli) == 2
