"""LoRA adapters on the language model, through PEFT.

Only the language model's attention and MLP projections get adapters: the
vision tower and the embeddings stay as they are. Rex-Omni's skill at seeing
is what a project's few hundred boxes should not move; which words and which
coordinates to write is what they teach.
"""

from __future__ import annotations

from dataclasses import dataclass

LORA_TARGET_MODULES = (
    r"(.*\.)?layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
)
"""PEFT's regex (matched against each module's full name): the language
model's seven projections per layer, named ``model.language_model.layers.N``
in transformers 5 and ``model.layers.N`` before; the vision tower's own
``mlp.gate_proj`` and friends do not match (they sit under
``visual.blocks.N``)."""
DEFAULT_LORA_RANK = 16
"""Adapter rank: the usual 8-64 range for instruction fine-tunes of 3B
models; small enough to be a guard against forgetting (fewer directions to
move) while a new class still fits."""
DEFAULT_LORA_ALPHA_RATIO = 2.0
"""alpha = 2 x rank, the common LoRA scaling (updates scaled by alpha/rank)."""
DEFAULT_LORA_DROPOUT = 0.05
"""Dropout on the adapter's input: a little regularisation for small projects."""


@dataclass(frozen=True)
class LoraSettings:
    rank: int = DEFAULT_LORA_RANK
    alpha: float | None = None
    dropout: float = DEFAULT_LORA_DROPOUT

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

    @property
    def scaled_alpha(self) -> float:
        return (
            self.alpha
            if self.alpha is not None
            else self.rank * DEFAULT_LORA_ALPHA_RATIO
        )


def add_lora(model, settings: LoraSettings):
    """``model`` wrapped in a PEFT model with fresh LoRA adapters (only they
    are trainable)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.scaled_alpha,
        lora_dropout=settings.dropout,
        target_modules=LORA_TARGET_MODULES,
        bias="none",
    )
    return get_peft_model(model, config)


def load_lora(model, adapter_dir: str, *, trainable: bool = False):
    """``model`` with the adapter saved in ``adapter_dir`` (PEFT's format)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable)


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
