"""A tiny Qwen2.5-VL with Rex-Omni's vocabulary, built entirely offline.

Tests and benches need a model with the real interface (Qwen special tokens,
bin tokens ``<0>``..``<999>``, the Qwen2.5-VL chat template, a real Qwen2-VL
image processor, a ``Qwen2_5_VLForConditionalGeneration``) but no download.
This module builds one in about a second; ``worker.training.trainer`` can then teach it
to find a coloured shape (``rexlabel make-test-model DIR --train-steps N``).

The directory it writes loads through the same code path as the real model
(``worker.engines.transformers_loading.load_model``). torch and transformers
are imported inside functions so importing this module stays light.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters.grammar import (
    BIN_TOKENS,
    END_OF_TEXT,
    IM_END,
    IMAGE_PAD,
    NUM_BINS,
    QWEN_SPECIAL_TOKENS,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
)
from converters.keypoint_sets import KEYPOINT_SETS

PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Qwen2's pre-tokenizer split (the same regex its tokenizer uses)."""

BPE_VOCAB_SIZE = 779
"""Upper bound of the byte-level BPE before special and bin tokens (256 bytes
plus merges; the generated lines yield fewer, about 650): the vocabulary has
about 1,700 tokens with the 14 specials and 1000 bins."""

TOKENIZER_TRAINING_LINES = 3000
"""Generated lines the BPE is trained on: enough for stable merges, < 1 s."""

CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content"
    " or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""The stock Qwen2.5-VL chat template (Qwen2.5-VL-*-Instruct chat_template.json)."""

MIN_PIXELS = 16 * 28 * 28
"""Upstream Rex-Omni's processor minimum (interface spec, section 3)."""
MAX_PIXELS = 2560 * 28 * 28
"""Upstream Rex-Omni's processor maximum: at most 2560 visual tokens."""

ROPE_THETA = 10.0
"""Measured: with Qwen's 1e6 the tiny model only learns the mean box (IoU 0.1)."""

BIN_CODE_FREQUENCIES = 8
"""Distinct low frequencies in the sin/cos code of bin values (0.5..4 cycles)."""
BIN_CODE_SCALE = 1.0
"""Amplitude of the bin code relative to the init std of other embeddings x 10:
the bin tokens start well separated from each other and from words."""


@dataclass(frozen=True)
class TinyModelSizes:
    """Dimensions of the tiny model (about 1.1M parameters)."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    vision_depth: int = 2
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 128
    vision_heads: int = 4
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    max_position_embeddings: int = 8192

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mrope_section(self) -> list[int]:
        """Temporal/height/width rotary sections; they sum to head_dim / 2.

        Qwen's 3B uses [16, 24, 24] for head_dim 128: the same proportions."""
        half = self.head_dim // 2
        temporal = half // 4
        height = (half - temporal) // 2
        return [temporal, height, half - temporal - height]


TINY_SIZES = TinyModelSizes()
"""The sizes the test model is built with: hidden 128, 2 layers, 4 heads, 2 KV heads
(small enough to train on a CPU in minutes, with the real Qwen2.5-VL layout)."""

_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
_SHAPES = ("square", "circle", "triangle", "rectangle", "star", "diamond")
_WORDS = (
    "person",
    "car",
    "dog",
    "cat",
    "bird",
    "bottle",
    "chair",
    "table",
    "word",
    "text line",
    "button",
    "icon",
    "menu",
    "hand",
    "animal",
    "object",
    "phone",
)
_TEMPLATES = (
    "Detect {c}. Output the bounding box coordinates in [x0, y0, x1, y1] format.",
    "Point to {c}.",
    "Detect all {c} and recognize them.",
    "Can you detect all {c} in this image in polygon format like "
    "[x0, y0, x1, y1, x2, y2 ...] and then recognize them?",
    'Detect element "{c}"" in the image.',
    'Point to element "{c}".',
    "Can you detect each {c} in the image using a [x0, y0, x1, y1] box format, "
    "and then provide the coordinates of its {k} as [x0, y0]? Output the answer "
    "in JSON format.",
    'Given reference boxes {{"object_1": ["<1><2><3><4>"]}} indicating one or '
    "more objects, find all similar objects in the image and output their "
    "bounding boxes.",
    "You are a helpful assistant",
    "You are a helpful assistant.",
)


def tokenizer_training_lines(count: int = TOKENIZER_TRAINING_LINES, seed: int = 0):
    """Prompt-like lines (every task template, colours, shapes, joint names)."""
    rng = random.Random(seed)
    phrases = [f"{c} {s}" for c in _COLOURS for s in _SHAPES] + list(_WORDS)
    joints = [", ".join(kp.joints) for kp in KEYPOINT_SETS.values()]
    lines = []
    for _ in range(count):
        categories = ", ".join(rng.sample(phrases, rng.randint(1, 3)))
        template = rng.choice(_TEMPLATES)
        lines.append(template.format(c=categories, k=rng.choice(joints)))
    lines.append(
        '```json\n{"person1": {"bbox": " <1> ", "keypoints": {"nose": '
        '"unvisible"}}}\n```'
    )
    return lines


def build_tokenizer(seed: int = 0, extra_lines: Sequence[str] = ()):
    """A byte-level BPE with Qwen2's normaliser/pre-tokenizer/decoder, then the
    14 Qwen special tokens, then ``<0>``..``<999>``, as a ``Qwen2Tokenizer``.

    ``extra_lines`` join the generated training lines (a model that writes
    other text, such as keypoint JSON, gets merges for it: fewer tokens)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import Qwen2Tokenizer

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = tokenizer_training_lines(seed=seed) + list(extra_lines)
    tok.train_from_iterator(lines, trainer)
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS]
    )
    tok.add_tokens([AddedToken(t, normalized=False) for t in BIN_TOKENS])
    return Qwen2Tokenizer(
        tokenizer_object=tok, eos_token=IM_END, pad_token=END_OF_TEXT, unk_token=None
    )


def build_processor(tokenizer):
    """Qwen2.5-VL processor: the Qwen2-VL image processor (PIL variant, as
    upstream's ``use_fast=False``), the tokenizer and the chat template."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import (
        Qwen2VLVideoProcessor,
    )

    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
        patch_size=TINY_SIZES.patch_size,
        merge_size=TINY_SIZES.spatial_merge_size,
        temporal_patch_size=TINY_SIZES.temporal_patch_size,
    )
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )


def build_config(
    tokenizer,
    sizes: TinyModelSizes = TINY_SIZES,
    vocab_size: int | None = None,
    rope_theta: float = ROPE_THETA,
):
    """``Qwen2_5_VLConfig`` for the tiny sizes; token ids come from ``tokenizer``.

    ``vocab_size`` defaults to the tokenizer's length (the real model pads to
    151936; bench_gpu passes that)."""
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab_size or len(tokenizer),
            "hidden_size": sizes.hidden_size,
            "intermediate_size": sizes.intermediate_size,
            "num_hidden_layers": sizes.num_layers,
            "num_attention_heads": sizes.num_heads,
            "num_key_value_heads": sizes.num_kv_heads,
            "max_position_embeddings": sizes.max_position_embeddings,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": rope_theta,
                "mrope_section": sizes.mrope_section,
            },
            "bos_token_id": None,
            "eos_token_id": ids[IM_END],
            "pad_token_id": ids[END_OF_TEXT],
        },
        vision_config={
            "depth": sizes.vision_depth,
            "hidden_size": sizes.vision_hidden_size,
            "intermediate_size": sizes.vision_intermediate_size,
            "num_heads": sizes.vision_heads,
            "out_hidden_size": sizes.hidden_size,
            "patch_size": sizes.patch_size,
            "spatial_merge_size": sizes.spatial_merge_size,
            "temporal_patch_size": sizes.temporal_patch_size,
            "window_size": 112,
            "fullatt_block_indexes": [sizes.vision_depth - 1],
        },
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=False,
    )


def bin_code(num_bins: int, dim: int):
    """A ``(num_bins, dim)`` tensor: a low-frequency sin/cos code of each bin's
    value in 0..1, so neighbouring bins start with similar vectors."""
    import torch

    values = torch.arange(num_bins, dtype=torch.float32) / (num_bins - 1)
    freqs = 0.5 * (torch.arange(dim // 2) % BIN_CODE_FREQUENCIES + 1)
    phases = 2 * math.pi * values[:, None] * freqs[None, :]
    code = torch.zeros(num_bins, dim)
    code[:, 0::2] = torch.cos(phases)
    code[:, 1::2] = torch.sin(phases)
    return code


def init_bin_embeddings(model, tokenizer, std: float | None = None) -> None:
    """Write the bin code into the input embeddings and LM-head rows of
    ``<0>``..``<999>`` (scaled to the model's init std x 10 x BIN_CODE_SCALE)."""
    import torch

    first = tokenizer.convert_tokens_to_ids("<0>")
    ids = [tokenizer.convert_tokens_to_ids(t) for t in BIN_TOKENS]
    if ids != list(range(first, first + NUM_BINS)):
        raise ValueError("bin tokens <0>..<999> must have consecutive ids")
    std = std if std is not None else model.config.text_config.initializer_range
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    code = bin_code(NUM_BINS, embed.shape[1]) * std * 10 * BIN_CODE_SCALE
    with torch.no_grad():
        embed[first : first + NUM_BINS] = code.to(embed.dtype)
        head[first : first + NUM_BINS] = code.to(head.dtype)


def build_model(
    tokenizer,
    sizes: TinyModelSizes = TINY_SIZES,
    seed: int = 0,
    rope_theta: float = ROPE_THETA,
):
    """A randomly initialised tiny ``Qwen2_5_VLForConditionalGeneration`` (fp32)."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    config = build_config(tokenizer, sizes, rope_theta=rope_theta)
    model = Qwen2_5_VLForConditionalGeneration(config)
    init_bin_embeddings(model, tokenizer)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(END_OF_TEXT),
    )
    return model


def make_test_model(
    out_dir: str | Path,
    *,
    train_steps: int = 0,
    task: str = "detection",
    seed: int = 0,
    verify: bool = True,
    log: Any = None,
) -> Path:
    """Build (and with ``train_steps`` > 0, train) the tiny model into ``out_dir``.

    ``task`` picks the synthetic training task (detection, pointing,
    ocr_polygon). With ``verify`` the saved directory is loaded back through
    the transformers engine's loader, the same path as the real model.
    Returns the directory.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(seed=seed)
    processor = build_processor(tokenizer)
    model = build_model(tokenizer, seed=seed)
    if train_steps > 0:
        from worker.training.synthetic import synthetic_examples
        from worker.training.trainer import TrainConfig, train

        train(
            model,
            processor,
            synthetic_examples(task, seed=seed),
            TrainConfig(steps=train_steps, seed=seed),
            log=log,
        )
    return save_model(model, processor, out, verify=verify)


def save_model(model, processor, out: Path, *, verify: bool = True) -> Path:
    """Write ``model`` and ``processor`` to ``out``; with ``verify`` load it
    back through the transformers engine's loader (the real model's path)."""
    model.save_pretrained(out)
    processor.save_pretrained(out)
    if verify:
        from worker.engines.transformers_loading import load_model

        load_model(str(out), device="cpu")
    return out
