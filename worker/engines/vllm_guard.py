"""The runaway guard inside vLLM: a v1 logits processor that ends a request
the moment the guard's rules trigger.

vLLM's own ``SamplingParams.repetition_detection`` stops repeated N-grams of a
fixed size range; it has no instance cap, and it stops at another token than
the transformers engine's guard, so the two engines would answer differently.
This processor runs the guard's exact rules
(``worker.engines.runaway_guard_text``) on each request's output ids as vLLM
generates them, and on a trigger allows only ``<|im_end|>`` at the next step:
a looping answer costs one more token instead of running to ``max_tokens``.
The engine (``worker.engines.vllm_engine.result_from_output``) then cuts the
answer after the triggering token and reports ``runaway``, as the
transformers engine does.

vLLM builds the processor itself, in its engine process, from the
``module:Class`` path the engine passes (``vllm_engine.GUARD_LOGITS_PROCESSOR``);
a request opts in with ``SamplingParams(extra_args={GUARD_ARG: {"max_repeats": r,
"max_instances": n}})`` (``vllm_engine.sampling_kwargs``). This module imports
vLLM: only vLLM loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from converters.grammar import IM_END
from worker.engines.runaway_guard_text import GuardTokenTexts, IdStreamGuard
from worker.engines.vllm_engine import GUARD_ARG

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config import VllmConfig


def guard_limits(params: SamplingParams) -> tuple[int, int] | None:
    """``(max_repeats, max_instances)`` a request asks for, or None."""
    limits = (params.extra_args or {}).get(GUARD_ARG)
    if limits is None:
        return None
    if not isinstance(limits, dict):
        raise ValueError(f"extra_args[{GUARD_ARG!r}] must be a mapping")
    repeats, instances = limits.get("max_repeats"), limits.get("max_instances")
    if not (isinstance(repeats, int) and repeats >= 2):
        raise ValueError(f"{GUARD_ARG}.max_repeats must be an int >= 2")
    if not (isinstance(instances, int) and instances >= 1):
        raise ValueError(f"{GUARD_ARG}.max_instances must be an int >= 1")
    return repeats, instances


def load_token_texts(tokenizer: Any) -> tuple[GuardTokenTexts, int]:
    """The guard's view of ``tokenizer``'s ids, and ``<|im_end|>``'s id."""
    from worker.engines.runaway_guard_torch import GrammarTokens

    grammar = GrammarTokens.from_tokenizer(tokenizer)
    return GuardTokenTexts.from_grammar(grammar), tokenizer.convert_tokens_to_ids(
        IM_END
    )


class RunawayLogitsProcessor(LogitsProcessor):
    """One per vLLM engine; keeps an :class:`IdStreamGuard` per guarded request
    (by its row in vLLM's persistent batch)."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        guard_limits(sampling_params)

    def __init__(
        self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool
    ) -> None:
        from transformers import AutoTokenizer

        model = vllm_config.model_config
        tokenizer = AutoTokenizer.from_pretrained(
            model.tokenizer, trust_remote_code=model.trust_remote_code
        )
        self.texts, self.stop_id = load_token_texts(tokenizer)
        self.device = device
        self.guards: dict[int, IdStreamGuard] = {}

    def is_argmax_invariant(self) -> bool:
        return False  # it forces <|im_end|>

    def _new_guard(
        self, params: SamplingParams, _prompt: list[int] | None, output: list[int]
    ) -> IdStreamGuard | None:
        limits = guard_limits(params)
        if limits is None:
            return None
        return IdStreamGuard(
            self.texts, output, max_repeats=limits[0], max_instances=limits[1]
        )

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.guards, batch_update, self._new_guard)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Rows whose guard has triggered may only end their answer. The ids
        are read here, not in ``update_state``: vLLM fills asynchronously
        scheduled tokens in just before sampling."""
        rows = [row for row, guard in self.guards.items() if guard.advance()]
        if rows:
            index = torch.tensor(rows, dtype=torch.long, device=logits.device)
            logits[index] = float("-inf")
            logits[index, self.stop_id] = 0.0
        return logits
