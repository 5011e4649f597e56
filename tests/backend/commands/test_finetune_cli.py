"""``rexlabel finetune``: bad arguments and inputs stop the command with exit
code 2 and a message naming the flag, before any model is loaded; a failed
start leaves ``--out`` as it found it, so the same command can run again."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from backend.cli import main
from backend.commands import finetune as command
from backend.commands.finetune import EXIT_USAGE, parse_task_ids
from common.finetune_data import read_split
from tests.backend.finetune.helpers import rect
from tests.backend.planner.helpers import view
from tests.fake_label_studio import LEGACY_TOKEN, FakeLabelStudio

CONFIG = view(
    '<RectangleLabels name="label" toName="image"><Label value="Car"/>'
    '<Label value="Dog"/></RectangleLabels>'
)


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """Every test here must stop before the model: training is a failure.
    ``trained`` records the calls of the tests that reach it on purpose."""
    trained = []

    def train(args, out, base, manifest, progress):
        trained.append(manifest)
        return 0

    monkeypatch.setattr(command, "_train", train)
    return trained


def _task(task_id, *labels):
    annotations = (
        [
            {
                "id": 100 + task_id,
                "was_cancelled": False,
                "result": [
                    rect(f"r{n}", 10, 10, 60, 60, label)
                    for n, label in enumerate(labels)
                ],
            }
        ]
        if labels
        else []
    )
    return {
        "id": task_id,
        "data": {"image": f"/data/upload/1/{task_id}.png"},
        "annotations": annotations,
    }


@pytest.fixture
def project(tmp_path):
    """An export of three tasks (two annotated), its images and its config."""
    folder = tmp_path / "project"
    images = folder / "images"
    images.mkdir(parents=True)
    tasks = [_task(1, "Car"), _task(2, "Dog"), _task(3)]
    for task in tasks:
        Image.new("RGB", (400, 200), (task["id"] * 50, 80, 80)).save(
            images / f"{task['id']}.png"
        )
    (folder / "export.json").write_text(json.dumps(tasks))
    (folder / "config.xml").write_text(CONFIG)
    return folder


def _args(project, out, *extra):
    return [
        "finetune",
        "--from", str(project / "export.json"),
        "--label-config", str(project / "config.xml"),
        "--images", str(project / "images"),
        "--out", str(out),
        "--progress", "none",
        *extra,
    ]  # fmt: skip


def _fails(argv, capsys, *words):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    for word in words:
        assert word in err, err
    return err


def _without(argv, flag):
    at = argv.index(flag)
    return argv[:at] + argv[at + 2 :]


# --- task ids ----------------------------------------------------------------


def test_parse_task_ids_reads_ids_and_ranges():
    assert parse_task_ids(None) is None
    assert parse_task_ids("3") == {3}
    assert parse_task_ids(" 1, 2 ,10-12,,2") == {1, 2, 10, 11, 12}
    assert parse_task_ids("5-5") == {5}


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("5-2", "'5-2'"),
        ("a", "'a'"),
        ("1,x-3", "'x-3'"),
        ("1-2-3", "'1-2-3'"),
        ("0-2000000", "'0-2000000'"),
        (",", "names no task"),
        ("", "names no task"),
    ],
)
def test_parse_task_ids_names_the_bad_part(text, names):
    with pytest.raises(ValueError, match="--tasks") as caught:
        parse_task_ids(text)
    assert names in str(caught.value)


# --- usage errors --------------------------------------------------------------


def test_a_bad_tasks_range_is_a_usage_error(project, tmp_path, capsys):
    out = tmp_path / "out"
    _fails(_args(project, out, "--tasks", "9-3"), capsys, "--tasks", "'9-3'")
    assert not out.exists()


def test_from_needs_images(project, tmp_path, capsys):
    out = tmp_path / "out"
    argv = _without(_args(project, out), "--images")
    _fails(argv, capsys, "--from needs --images")
    assert not out.exists() or not any(out.iterdir())
    # nothing was left behind: the corrected command runs
    assert main(_args(project, out)) == 0


def test_an_export_needs_a_label_config(project, tmp_path, capsys):
    out = tmp_path / "out"
    _fails(_without(_args(project, out), "--label-config"), capsys, "--label-config")
    assert main(_args(project, out)) == 0


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--from", "nowhere.json", "--from"),
        ("--label-config", "nowhere.xml", "--label-config"),
        ("--images", "nowhere", "--images"),
    ],
)
def test_missing_inputs_are_named(project, tmp_path, capsys, flag, value, says):
    argv = _args(project, tmp_path / "out")
    argv[argv.index(flag) + 1] = str(tmp_path / value)
    _fails(argv, capsys, says, value)
    assert main(_args(project, tmp_path / "out")) == 0


def test_a_label_config_the_planner_refuses_is_a_usage_error(project, tmp_path, capsys):
    (project / "config.xml").write_text("<View><Text name='t' value='$t'/></View>")
    _fails(_args(project, tmp_path / "out"), capsys, "rexlabel finetune:")


def test_out_must_be_empty_without_resume(project, tmp_path, capsys, no_training):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _fails(_args(project, out), capsys, "--out", "is not empty", "--resume")
    (out / "notes.txt").unlink()
    (out / "rexlabel-model.json").write_text("{}")
    _fails(_args(project, out), capsys, "a finished model")
    assert no_training == []


def test_out_that_is_a_file_is_a_usage_error(project, tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("a file")
    _fails(_args(project, out), capsys, "--out")


def test_resume_needs_prepared_data(project, tmp_path, capsys):
    out = tmp_path / "out"
    _fails(_args(project, out, "--resume"), capsys, "--resume", "no prepared data")
    (out / "data").mkdir(parents=True)  # preparation stopped before its manifest
    _fails(_args(project, out, "--resume"), capsys, "--resume", "manifest.json")


def test_no_annotated_task_means_no_training_examples(project, tmp_path, capsys):
    (project / "export.json").write_text(json.dumps([_task(1), _task(2)]))
    err = _fails(_args(project, tmp_path / "out"), capsys, "no training examples")
    assert '"skipped_no_annotation": 2' in err


def test_only_unselected_tasks_mean_no_training_examples(project, tmp_path, capsys):
    _fails(
        _args(project, tmp_path / "out", "--tasks", "40-50"),
        capsys,
        "no training examples",
    )


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (("--val-split", "1"), "--val-split"),
        (("--replay-images", "-1"), "--replay-images"),
        (("--extra-params", "[1]"), "--extra-params"),
        (("--focus", "Cat"), "--focus"),
        (("--batch-size", "0"), "--batch-size"),
        (("--steps", "0"), "--steps"),
        (("--epochs", "0"), "--epochs"),
        (("--lr", "-1"), "--lr"),
        (("--lora-rank", "0"), "--lora-rank"),
        (("--replay", "1"), "--replay"),
        (("--replay", "-0.5"), "--replay"),
        (("--bin-sigma", "-1"), "--bin-sigma"),
        (("--lr", "nan"), "--lr"),
        (("--epochs", "inf"), "--epochs"),
    ],
)
def test_bad_settings_stop_before_the_data_is_prepared(
    project, tmp_path, capsys, extra, says
):
    out = tmp_path / "out"
    _fails(_args(project, out, *extra), capsys, says)
    assert not out.exists() or not any(out.iterdir())


def test_argparse_refuses_two_sources_or_two_lengths(project, tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main([*_args(project, tmp_path / "out"), "--project", "3"])
    assert caught.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as caught:
        main([*_args(project, tmp_path / "o2"), "--steps", "5", "--epochs", "1"])
    assert caught.value.code == EXIT_USAGE
    assert "not allowed with argument" in capsys.readouterr().err


def test_json_progress_reports_the_error_as_an_event(project, tmp_path, capsys):
    argv = _args(project, tmp_path / "out", "--tasks", "x")
    argv[argv.index("--progress") + 1] = "json"
    assert main(argv) == EXIT_USAGE
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "error" and "--tasks" in events[-1]["message"]


# --- what reaches training -------------------------------------------------------


def test_a_good_command_prepares_the_data_then_trains(project, tmp_path, no_training):
    out = tmp_path / "out"
    assert main(_args(project, out, "--val-split", "0", "--replay-phrases", "")) == 0
    (manifest,) = no_training
    assert manifest["examples"]["detection"] == 2
    assert manifest["counts"]["train"] == sum(manifest["examples"].values())
    assert manifest["counts"]["val"] == manifest["counts"]["replay_requests"] == 0
    assert manifest["source"] == {
        "from": str(project / "export.json"),
        "format": "labelstudio",
    }


def test_project_plans_with_the_connected_models_extra_params(
    tmp_path, monkeypatch, no_training
):
    """``--project`` reads the Extra params of the model connected in Label
    Studio, as ``/predict`` does: ``rex_categories`` there asks only Car."""
    with FakeLabelStudio() as ls:
        ls.add_project(3, CONFIG)
        for task_id, label in ((1, "Car"), (2, "Dog")):
            task = ls.add_task(3, task_id, {"image": f"/data/upload/3/{task_id}.png"})
            task["annotations"] = _task(task_id, label)["annotations"]
            ls.files[f"3/{task_id}.png"] = _png(task_id)
        ls.add_ml_backend(3, 1, "http://rexlabel:9090", {"rex_categories": "Car"})
        monkeypatch.setenv("LABEL_STUDIO_URL", ls.url)
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", LEGACY_TOKEN)
        out = tmp_path / "out"
        argv = ["finetune", "--project", "3", "--out", str(out), "--progress", "none"]
        assert main([*argv, "--val-split", "0", "--replay-phrases", ""]) == 0
    train = read_split(out / "data", "train")
    detection = [r.categories for r in train if r.task == "detection"]
    assert detection == [("Car",), ("Car",)]  # Dog is not asked
    assert no_training[0]["source"] == {"project": 3}


def _png(seed: int) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (400, 200), (seed * 40, 90, 90)).save(buffer, "PNG")
    return buffer.getvalue()
