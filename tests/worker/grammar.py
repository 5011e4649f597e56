"""Test-only logits processor: make a random model write well-formed answers.

An untrained model writes noise. ``TemplateLogitsProcessor`` forces each row
of a batch to follow a template: fixed text, where every ``{B}`` slot lets the
model pick any coordinate token ``<0>``..``<999>`` (its own argmax among them),
then ``<|im_end|>``. So the text is always well-formed, yet the coordinates
and every token's probability still come from the real model. A template
without ``{B}`` forces exact text (used to make a generation loop).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

BIN_SLOT = "{B}"
STOP = "<|im_end|>"
_ANY_BIN = -1


def template_ids(tokenizer, template: str) -> list[int]:
    """Token ids of ``template`` + stop, with ``_ANY_BIN`` for each ``{B}``."""
    ids: list[int] = []
    pieces = template.split(BIN_SLOT)
    for index, piece in enumerate(pieces):
        if piece:
            ids.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
        if index < len(pieces) - 1:
            ids.append(_ANY_BIN)
    ids.extend(tokenizer(STOP, add_special_tokens=False)["input_ids"])
    return ids


class TemplateLogitsProcessor(LogitsProcessor):
    """One template per row, in the order of the batch's requests.

    The first call of a ``generate`` sees the (padded) prompt; later steps
    index the template by how many tokens were generated since. Past the end
    of its template a row may only write ``<|im_end|>``.
    """

    def __init__(self, tokenizer, templates: list[str]) -> None:
        self.templates = [template_ids(tokenizer, t) for t in templates]
        self.first_bin = tokenizer.convert_tokens_to_ids("<0>")
        self.stop_id = tokenizer.convert_tokens_to_ids(STOP)
        self.prompt_length: int | None = None

    def reset(self) -> None:
        self.prompt_length = None

    def __call__(self, input_ids, scores):
        if self.prompt_length is None or input_ids.shape[1] < self.prompt_length:
            self.prompt_length = input_ids.shape[1]
        step = input_ids.shape[1] - self.prompt_length
        if input_ids.shape[0] != len(self.templates):
            raise ValueError(
                f"{len(self.templates)} templates for a batch of {input_ids.shape[0]}"
            )
        allowed = torch.full_like(scores, float("-inf"))
        for row, template in enumerate(self.templates):
            wanted = template[step] if step < len(template) else self.stop_id
            if wanted == _ANY_BIN:
                bins = slice(self.first_bin, self.first_bin + 1000)
                allowed[row, bins] = scores[row, bins]
            else:
                allowed[row, wanted] = 0.0
        return allowed
