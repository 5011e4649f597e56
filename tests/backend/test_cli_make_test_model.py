"""``rexlabel make-test-model``: builds a loadable model and reports training."""

from __future__ import annotations

import json

from backend.cli import main


def test_random_model_directory_loads(tmp_path, capsys):
    out_dir = tmp_path / "tiny"
    assert main(["make-test-model", str(out_dir)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"directory": str(out_dir), "train_steps": 0}
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "processor_config.json",
    ):
        assert (out_dir / name).exists(), name

    from worker.engines.transformers_loading import load_model

    model, processor = load_model(str(out_dir), device="cpu")
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert processor.tokenizer.convert_tokens_to_ids("<999>") is not None


def test_training_reports_held_out_metrics(tmp_path, capsys):
    code = main(
        [
            "make-test-model",
            str(tmp_path / "m"),
            "--train-steps",
            "2",
            "--task",
            "pointing",
            "--seed",
            "1",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    report = json.loads(captured.out)
    assert report["task"] == "pointing" and report["train_steps"] == 2
    assert 0.0 <= report["inside"] <= 1.0
    assert 0.0 <= report["phrase_accuracy"] <= 1.0
    assert "step 2/2 loss" in captured.err


def test_negative_steps_exit_2(tmp_path, capsys):
    assert main(["make-test-model", str(tmp_path / "m"), "--train-steps", "-1"]) == 2
    assert "--train-steps" in capsys.readouterr().err


def test_readme_recipe_builds_its_own_architecture(tmp_path, capsys):
    out_dir = tmp_path / "readme"
    code = main(
        ["make-test-model", str(out_dir), "--recipe", "readme", "--train-steps", "0"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"directory": str(out_dir), "recipe": "readme", "train_steps": 0}
    config = json.loads((out_dir / "config.json").read_text())
    text = config.get("text_config", config)
    assert text["num_hidden_layers"] == 4
    assert text["rope_parameters"]["rope_theta"] == 10_000.0
    from transformers import AutoTokenizer

    from worker.training.readme_model import tokenizer_lines
    from worker.training.tiny_model import build_tokenizer

    answer = tokenizer_lines(seed=1)[0]
    readme = AutoTokenizer.from_pretrained(out_dir)
    shapes = build_tokenizer(seed=0)
    assert len(readme(answer)["input_ids"]) < 0.8 * len(shapes(answer)["input_ids"])
