"""``run_finetune`` on the tiny random model: what a run writes, its
checkpoints, Ctrl-C and ``--resume``, out of memory, a full fine-tune's
frozen vision tower, and an adapter that loads back as the model it trained.

Each run is a few steps of batch 2 on 112 px images (about 0.2 s on a CPU
once the model is loaded)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from common.finetune_data import Record, data_dir, write_split
from common.model_store import write_card
from worker.training.finetune import (
    ADAPTER_SUBDIR,
    CHECKPOINT_DIR_NAME,
    CHECKPOINT_META,
    CHECKPOINT_STATE,
    FULL_SUBDIR,
    FULL_WEIGHTS,
    FinetuneError,
    FinetuneInterrupted,
    FinetuneOutOfMemory,
    FinetuneSettings,
    drop_checkpoint,
    load_base,
    run_finetune,
)
from worker.training.synthetic import make_example, render_shape
from worker.training.trainer import TrainingExample, encode_batch

STEPS = 4
CHECKPOINT_EVERY = 2
LR = 1e-2
"""Large enough that four steps move the adapter visibly."""
OOM_TEXT = "CUDA out of memory. Tried to allocate 2.00 GiB"
"""What torch says when a GPU runs out (the run tells it by these words)."""


def _make_data(out, train=6, replay=2, seed=0):
    """A data directory of synthetic detection examples, as ``prepare`` writes."""
    data = data_dir(out)
    (data / "images").mkdir(parents=True)
    rng = random.Random(seed)
    records = []
    for n in range(train + replay):
        sample = render_shape(rng)
        example = make_example(sample, "detection")
        sample.image.save(data / "images" / f"{n}.png")
        records.append(
            Record(
                prompt=example.prompt,
                answer=example.answer,
                image=f"images/{n}.png",
                task="detection",
                width=112,
                height=112,
                task_id=n,
            )
        )
    write_split(data, "train", records[:train])
    write_split(data, "replay", records[train:])
    return out


class Events:
    """``on_event``: records events; ``stop_at``/``fail_at`` act on a step."""

    def __init__(self, *, stop_at=None, fail_at=None, error=None, on_checkpoint=None):
        self.seen: list[tuple[str, dict]] = []
        self.stop_at, self.fail_at, self.error = stop_at, fail_at, error
        self.on_checkpoint = on_checkpoint

    def __call__(self, name, fields):
        self.seen.append((name, dict(fields)))
        if name == "checkpoint" and self.on_checkpoint:
            self.on_checkpoint(fields)
        if name == "step" and fields["step"] == self.stop_at:
            raise KeyboardInterrupt
        if name == "step" and fields["step"] == self.fail_at:
            raise self.error

    def steps(self):
        return [f["step"] for name, f in self.seen if name == "step"]


def _settings(base, **changes):
    values = {
        "base": str(base),
        "steps": STEPS,
        "batch_size": 2,
        "learning_rate": LR,
        "checkpoint_every": CHECKPOINT_EVERY,
        "device": "cpu",
    }
    return FinetuneSettings(**(values | changes))


def _meta(out):
    return json.loads((out / CHECKPOINT_DIR_NAME / CHECKPOINT_META).read_text())


# --- LoRA: what a run writes ---------------------------------------------------


@dataclass
class WholeRun:
    """One uninterrupted LoRA run, shared by the tests that read it."""

    out: Path
    result: Any
    model: Any
    processor: Any
    events: Events
    checkpoints: list[tuple]


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, tiny_model_dir) -> WholeRun:
    out = _make_data(tmp_path_factory.mktemp("whole") / "run")
    checkpoints = []

    def look(fields):
        checkpoint = out / CHECKPOINT_DIR_NAME
        checkpoints.append(
            (
                fields["step"],
                _meta(out)["step"],
                (checkpoint / ADAPTER_SUBDIR / "adapter_model.safetensors").is_file(),
                (checkpoint / CHECKPOINT_STATE).is_file(),
            )
        )

    events = Events(on_checkpoint=look)
    result, model, processor = run_finetune(
        out, _settings(tiny_model_dir), on_event=events
    )
    return WholeRun(out, result, model, processor, events, checkpoints)


def test_a_lora_run_writes_the_adapter_and_its_digest(whole_run):
    out, result = whole_run.out, whole_run.result
    # a checkpoint every 2 steps, none at the last step; it stays until the
    # caller has written the card (rexlabel finetune), then drop_checkpoint
    assert whole_run.checkpoints == [(2, 2, True, True)]
    assert (out / CHECKPOINT_DIR_NAME).is_dir()
    drop_checkpoint(out)
    assert not (out / CHECKPOINT_DIR_NAME).exists()
    assert not list(out.glob(f"{CHECKPOINT_DIR_NAME}.*"))
    assert whole_run.events.steps() == [1, 2, 3, 4]
    loaded = dict(whole_run.events.seen)["loaded"]
    assert 0 < loaded["trainable_parameters"] < loaded["total_parameters"]
    assert (result.steps, result.resumed_from) == (STEPS, 0)
    assert [s for s, _ in result.losses] == [1, 2, 3, 4]
    assert result.final_loss == result.losses[-1][1]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(result.files)
    assert not (out / "config.json").exists()  # an adapter, not every weight
    adapter = (out / "adapter_model.safetensors").read_bytes()
    digest = hashlib.sha256(b"adapter_model.safetensors\0" + adapter).hexdigest()
    assert result.weights_sha256 == digest
    assert not whole_run.model.training  # merged, in eval mode for predictions


def test_lora_trains_only_adapters_on_the_language_model(tmp_path, tiny_model_dir):
    from worker.training.lora import DEFAULT_LORA_RANK, LoraSettings, add_lora

    model, _ = load_base(str(tiny_model_dir), "cpu")
    wrapped = add_lora(model, LoraSettings())
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(".language_model.layers." in n for n in trainable)
    projections = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert projections == {"q_proj", "k_proj", "v_proj", "o_proj"} | {
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    a_weight = next(p for n, p in wrapped.named_parameters() if "lora_A" in n)
    assert a_weight.shape[0] == DEFAULT_LORA_RANK


# --- Ctrl-C and --resume ---------------------------------------------------------


def test_an_interrupted_run_resumes_with_the_very_same_steps(
    tmp_path, tiny_model_dir, whole_run
):
    """Stopped after step 2 and resumed, the run gives the losses of a run
    that was never stopped, bit for bit: the batches are a function of the
    step, and the checkpoint holds the optimizer, the schedule and the random
    state LoRA's dropout draws from."""
    whole = whole_run.result
    out = _make_data(tmp_path / "stopped")
    with pytest.raises(FinetuneInterrupted, match="--resume") as caught:
        run_finetune(out, _settings(tiny_model_dir), on_event=Events(stop_at=2))
    assert caught.value.step == 2
    assert _meta(out)["step"] == 2
    events = Events()
    resumed, _, _ = run_finetune(
        out, _settings(tiny_model_dir), resume=True, on_event=events
    )
    assert events.steps() == [3, 4]
    assert resumed.resumed_from == 2
    assert resumed.losses == whole.losses  # steps 1-2 from the checkpoint
    assert resumed.weights_sha256 == whole.weights_sha256


def test_sigint_finishes_the_step_then_checkpoints(tmp_path, tiny_model_dir):
    out = _make_data(tmp_path / "run")
    before = signal.getsignal(signal.SIGINT)

    def on_event(name, fields):
        if name == "step" and fields["step"] == 1:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while step 1 reports

    with pytest.raises(FinetuneInterrupted) as caught:
        run_finetune(out, _settings(tiny_model_dir), on_event=on_event)
    assert caught.value.step == 1 and _meta(out)["step"] == 1
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


def test_resume_refuses_a_different_batch_size(tmp_path, tiny_model_dir):
    out = _make_data(tmp_path / "run")
    with pytest.raises(FinetuneInterrupted):
        run_finetune(out, _settings(tiny_model_dir), on_event=Events(stop_at=2))
    with pytest.raises(FinetuneError, match="batch_size=2") as caught:
        run_finetune(out, _settings(tiny_model_dir, batch_size=3), resume=True)
    assert "3" in str(caught.value) and "use the same value" in str(caught.value)
    assert _meta(out)["step"] == 2  # the checkpoint is still there to resume


def test_resume_before_the_first_checkpoint_is_the_run_from_step_one(
    tmp_path, tiny_model_dir, whole_run
):
    """Stopped before any checkpoint (while the base answered the replay
    questions, say): --resume runs the whole schedule on the prepared data,
    exactly as the uninterrupted run did, and says there was none."""
    out = _make_data(tmp_path / "run")
    events = Events()
    result, _, _ = run_finetune(
        out, _settings(tiny_model_dir), resume=True, on_event=events
    )
    assert result.resumed_from == 0
    assert events.steps() == [1, 2, 3, 4]
    assert (
        "checkpoint",
        {"step": 0, "path": "none yet: starting at step 1"},
    ) in events.seen
    assert result.losses == whole_run.result.losses


# --- out of memory ---------------------------------------------------------------


def test_out_of_memory_suggests_a_smaller_batch_and_keeps_the_checkpoint(
    tmp_path, tiny_model_dir
):
    out = _make_data(tmp_path / "run")
    events = Events(fail_at=3, error=RuntimeError(OOM_TEXT))
    with pytest.raises(FinetuneOutOfMemory) as caught:
        run_finetune(out, _settings(tiny_model_dir), on_event=events)
    message = str(caught.value)
    assert "out of memory at step 3" in message
    assert "smaller --batch-size" in message and "batch size 2" in message
    assert "--method lora" not in message  # it is LoRA already
    assert str(out / CHECKPOINT_DIR_NAME) in message and "--resume" in message
    assert _meta(out)["step"] == 2  # the step-2 checkpoint is whole


def test_out_of_memory_before_a_checkpoint_says_none_was_written(
    tmp_path, tiny_model_dir
):
    out = _make_data(tmp_path / "run")
    events = Events(fail_at=1, error=torch.OutOfMemoryError("CUDA error"))
    with pytest.raises(FinetuneOutOfMemory) as caught:
        run_finetune(out, _settings(tiny_model_dir, method="full"), on_event=events)
    assert "no checkpoint was written yet" in str(caught.value)
    assert "--batch-size or --method lora" in str(caught.value)


def test_other_errors_are_not_taken_for_out_of_memory(tmp_path, tiny_model_dir):
    out = _make_data(tmp_path / "run")
    events = Events(fail_at=1, error=RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch") as caught:
        run_finetune(out, _settings(tiny_model_dir), on_event=events)
    assert not isinstance(caught.value, FinetuneError)


# --- a full fine-tune ---------------------------------------------------------------


def test_a_full_finetune_trains_the_language_model_and_freezes_vision(
    tmp_path, tiny_model_dir
):
    """Interrupted after step 1 and resumed into the base model the caller
    holds (no second copy): vision weights are the base's, every language
    model weight moved."""
    out = _make_data(tmp_path / "run")
    settings = _settings(tiny_model_dir, method="full", steps=2, learning_rate=1e-3)
    with pytest.raises(FinetuneInterrupted):
        run_finetune(out, settings, on_event=Events(stop_at=1))
    saved = out / CHECKPOINT_DIR_NAME / FULL_SUBDIR
    assert [p.name for p in saved.iterdir()] == [FULL_WEIGHTS]
    model, processor = load_base(str(tiny_model_dir), "cpu")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result, trained, kept = run_finetune(
        out, settings, resume=True, loaded=(model, processor)
    )
    assert trained is model and kept is processor
    assert result.resumed_from == 1
    after = dict(trained.named_parameters())
    vision = [n for n in before if ".visual." in f".{n}"]
    language = [n for n in before if ".language_model." in n]
    assert vision and language
    assert all(not after[n].requires_grad for n in vision)
    assert all(torch.equal(before[n], after[n]) for n in vision)
    changed = [n for n in language if not torch.equal(before[n], after[n])]
    assert len(changed) == len(language)  # every language-model weight moved
    assert (out / "config.json").is_file() and "model.safetensors" in result.files
    assert (out / "processor_config.json").is_file()  # it loads on its own
    frozen = sum(before[n].numel() for n in vision)
    assert result.trainable_parameters == result.total_parameters - frozen


# --- the written adapter loads back -------------------------------------------------


def test_the_written_adapter_loads_as_the_model_it_trained(tiny_model_dir, whole_run):
    from worker.engines.transformers_loading import load_model

    out = whole_run.out
    write_card(
        out,
        {
            "method": "lora",
            "base": str(tiny_model_dir),
            "weights_sha256": whole_run.result.weights_sha256,
        },
    )
    sample = render_shape(random.Random(7))
    example = make_example(sample, "detection")
    inputs = encode_batch(
        whole_run.processor,
        [TrainingExample(sample.image, example.prompt, example.answer)],
    )
    inputs.pop("labels")

    def logits(model):
        with torch.no_grad():
            return model(**inputs).logits

    loaded, _ = load_model(str(out), "cpu")
    base, _ = load_model(str(tiny_model_dir), "cpu")
    assert torch.allclose(logits(loaded), logits(whole_run.model), atol=1e-5)
    assert not torch.allclose(logits(base), logits(whole_run.model), atol=1e-3)


def test_merge_writes_every_weight_and_loads_as_the_merged_model(
    tmp_path, tiny_model_dir
):
    from worker.engines.transformers_loading import load_model

    out = _make_data(tmp_path / "run")
    result, merged, processor = run_finetune(
        out, _settings(tiny_model_dir, merge=True, steps=2)
    )
    assert "model.safetensors" in result.files and "config.json" in result.files
    assert not (out / "adapter_config.json").exists()
    write_card(out, {"method": "full", "weights_sha256": result.weights_sha256})
    sample = render_shape(random.Random(3))
    example = make_example(sample, "detection")
    inputs = encode_batch(
        processor, [TrainingExample(sample.image, example.prompt, example.answer)]
    )
    inputs.pop("labels")
    loaded, _ = load_model(str(out), "cpu")
    with torch.no_grad():
        assert torch.allclose(
            loaded(**inputs).logits, merged(**inputs).logits, atol=1e-5
        )


# --- settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"method": "qlora"}, "method must be one of lora, full"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"batch_size": 0}, "batch size must be >= 1"),
        ({"learning_rate": 0.0}, "learning rate must be > 0"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"replay_share": 1.0}, r"replay share must be in \[0, 1\)"),
        ({"bin_sigma": -1.0}, "bin sigma"),
        ({"bin_sigma": float("nan")}, "bin sigma"),
    ],
)
def test_bad_settings_are_refused(changes, says):
    with pytest.raises(ValueError, match=says):
        _settings("base", **changes)


def test_a_data_directory_without_training_examples_is_refused(
    tmp_path, tiny_model_dir
):
    out = tmp_path / "run"
    data_dir(out).mkdir(parents=True)
    with pytest.raises(FinetuneError, match="no training examples"):
        run_finetune(out, _settings(tiny_model_dir))
