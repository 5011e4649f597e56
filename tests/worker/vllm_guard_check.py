"""Run in .venv-vllm by test_vllm_engine.py: the in-engine runaway guard
against vLLM's own logits-processor interfaces (``BatchUpdate``,
``SamplingParams``), without loading a model. Prints one JSON line."""

import json
import sys
from types import SimpleNamespace

import torch
from transformers import AutoTokenizer
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

from worker.engines.base import SamplingSettings
from worker.engines.vllm_engine import sampling_kwargs, supports_guard_processor
from worker.engines.vllm_guard import RunawayLogitsProcessor

VOCAB = 2000
"""Logit columns (past the tiny tokenizer's 1,793 ids, as a padded vocabulary)."""


def forced_rows(logits: torch.Tensor) -> list[bool]:
    return [bool(torch.isinf(row).any()) for row in logits]


def main(model_dir: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = SimpleNamespace(
        model_config=SimpleNamespace(tokenizer=model_dir, trust_remote_code=False)
    )
    processor = RunawayLogitsProcessor(config, torch.device("cpu"), False)
    ids = tokenizer.convert_tokens_to_ids
    box = [ids(f"<{v}>") for v in (1, 2, 3, 4)]
    comma = tokenizer(",", add_special_tokens=False)["input_ids"][0]
    answer = [ids("<|box_start|>"), *box, comma, *box, comma, *box]
    guarded = SamplingParams(**sampling_kwargs(SamplingSettings(max_repeats=2)))
    rows: list[list[int]] = [[], [], []]
    processor.update_state(
        BatchUpdate(
            batch_size=3,
            removed=[],
            added=[
                (0, guarded, None, rows[0]),  # loops: the same box twice
                (1, guarded, None, rows[1]),  # one long run: never an item
                (2, SamplingParams(max_tokens=8), None, rows[2]),  # not guarded
            ],
            moved=[],
        )
    )
    forced_at, allowed, seen = None, None, None
    for step, token in enumerate(answer):
        rows[0].append(token)
        rows[1].append(box[0])
        rows[2].append(token)
        processor.update_state(None)
        out = processor.apply(torch.zeros(3, VOCAB))
        if forced_at is None and any(forced_rows(out)):
            forced_at, seen = step, forced_rows(out)
            allowed = [i for i, v in enumerate(out[0].tolist()) if v == 0.0]
    processor.update_state(  # the looping request moves to row 2
        BatchUpdate(
            batch_size=3,
            removed=[1],
            added=[],
            moved=[(0, 2, MoveDirectionality.SWAP)],
        )
    )
    print(
        json.dumps(
            {
                "forced_at": forced_at,
                "second_comma": answer.index(comma, answer.index(comma) + 1),
                "rows_forced": seen,
                "allowed": allowed,
                "stop_id": ids("<|im_end|>"),
                "after_move": forced_rows(processor.apply(torch.zeros(3, VOCAB))),
                "supported": supports_guard_processor(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
