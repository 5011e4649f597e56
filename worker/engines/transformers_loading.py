"""Loading Rex-Omni for the transformers engine: device, dtype, attention,
the processor, and quantized (AWQ) checkpoints.

The one loading path for the real Rex-Omni and the tiny test model
(:func:`load_model`); the engine (``worker.engines.transformers_engine``) serves
what it loads. torch and transformers are imported inside functions.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from converters.geometry import MAX_PIXELS, MIN_PIXELS

FLASH_ATTENTION = "flash_attention_2"
"""Upstream's attention on GPUs, used when the flash_attn package is importable."""
SDPA_ATTENTION = "sdpa"
"""PyTorch's fused attention: the portable fallback (CPU, GPUs without flash_attn)."""
QUANTIZATIONS = ("awq",)
"""Quantized checkpoints this engine loads (REXLABEL_QUANTIZATION): transformers
reads the method from the checkpoint's ``quantization_config`` and needs CUDA
kernels for it (autoawq / gptqmodel)."""
AWQ_DTYPE = "float16"
"""AWQ kernels compute in fp16 (AutoAWQ's and transformers' documented dtype)."""
IMAGE_PROCESSOR_BACKEND = "pil"
"""Upstream loads the processor with ``use_fast=False``: the PIL image processor,
whose bicubic resize matches the one the model was trained with."""


def resolve_device(device: str | None = None) -> str:
    """``auto``/None -> ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def default_dtype(device: str):
    """bf16 on GPUs (Rex-Omni's weights), fp32 elsewhere (bf16 is slow on CPUs)."""
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def default_attention(device: str) -> str:
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn"):
        return FLASH_ATTENTION
    return SDPA_ATTENTION


def load_processor(
    model_id: str, *, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
):
    """The model's processor with upstream's pixel bounds; left padding.

    The image processor is swapped for its PIL variant (``backend`` applies to
    every sub-processor in ``AutoProcessor``, and the video one has no PIL
    variant)."""
    from transformers import AutoImageProcessor, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_id)
    processor.image_processor = AutoImageProcessor.from_pretrained(
        model_id,
        backend=IMAGE_PROCESSOR_BACKEND,
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
    )
    processor.tokenizer.padding_side = "left"
    return processor


class QuantizationError(ValueError):
    """REXLABEL_QUANTIZATION does not fit the checkpoint or the device."""


def checkpoint_quantization(model_id: str) -> str | None:
    """The ``quant_method`` in the checkpoint's config (``awq``...), or None."""
    from transformers import AutoConfig

    found = getattr(AutoConfig.from_pretrained(model_id), "quantization_config", None)
    if found is None:
        return None
    method = found.get("quant_method") if isinstance(found, dict) else None
    method = method or getattr(found, "quant_method", None)
    return str(getattr(method, "value", method) or "").lower() or None


def check_quantization(model_id: str, device: str, quantization: str | None) -> None:
    """Raise QuantizationError unless ``quantization`` can load ``model_id`` here.

    transformers quantizes from the checkpoint's own ``quantization_config``;
    the setting states what the operator expects, so a mismatch (an AWQ
    setting on plain weights, or on a CPU) stops loading with its reason.
    """
    if quantization is None:
        return
    if quantization not in QUANTIZATIONS:
        raise QuantizationError(
            f"REXLABEL_QUANTIZATION={quantization!r}: expected none or "
            f"{', '.join(QUANTIZATIONS)}"
        )
    if not device.startswith("cuda"):
        raise QuantizationError(
            f"REXLABEL_QUANTIZATION={quantization} needs a CUDA device (AWQ "
            f"kernels run only there); the device is {device!r}"
        )
    found = checkpoint_quantization(model_id)
    if found != quantization:
        raise QuantizationError(
            f"REXLABEL_QUANTIZATION={quantization} but {model_id!r} is "
            f"{'a ' + found if found else 'not a quantized'} checkpoint (its "
            "config.json has no matching quantization_config)"
        )


def load_model(
    model_id: str,
    device: str | None = "auto",
    *,
    dtype: Any = None,
    attn_implementation: str | None = None,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
    quantization: str | None = None,
):
    """Load ``(model, processor)`` from a hub id or a local directory.

    The one loading path for the real Rex-Omni and the tiny test model. A
    fine-tuned directory (``rexlabel finetune``: a LoRA adapter whose card
    names its base) loads its base, then merges each adapter in, base first
    (``common.model_store.base_chain``); a project's models directory serves
    the run its ``current`` pointer names.
    ``quantization`` (``awq``) is checked against the checkpoint and device
    (:func:`check_quantization`) and computes in fp16.
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from common.model_store import base_chain

    chain = base_chain(model_id)
    model_id = chain[-1][0]
    device = resolve_device(device)
    check_quantization(model_id, device, quantization)
    dtype = dtype or (AWQ_DTYPE if quantization else default_dtype(device))
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    attn = attn_implementation or default_attention(device)
    processor = load_processor(model_id, min_pixels=min_pixels, max_pixels=max_pixels)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        model_id, dtype=dtype, attn_implementation=attn
    )
    if len(chain) > 1:
        from worker.training.lora import load_lora

        for adapter_dir, _card in reversed(chain[:-1]):
            model = load_lora(model, adapter_dir).merge_and_unload()
    model.to(device)
    model.eval()
    return model, processor
