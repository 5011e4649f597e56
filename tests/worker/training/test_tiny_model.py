"""The tiny model: Rex-Omni's vocabulary and chat format, loadable like the real one."""

from __future__ import annotations

import json

import pytest

from converters.grammar import QWEN_SPECIAL_TOKENS
from worker.training import tiny_model


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from worker.engines.transformers_loading import load_processor

    return load_processor(str(tiny_model_dir))


def test_special_tokens_then_bins_in_qwen_order(processor):
    tok = processor.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    first_bin = tok.convert_tokens_to_ids("<0>")
    assert first_bin == ids[-1] + 1
    assert tok.convert_tokens_to_ids("<999>") == first_bin + 999
    assert len(tok) == first_bin + 1000
    assert tok.eos_token == "<|im_end|>"
    assert tok.pad_token == "<|endoftext|>"
    assert type(tok).__name__ == "Qwen2Tokenizer"


def test_grammar_round_trips_through_the_tokenizer(processor):
    tok = processor.tokenizer
    text = (
        "<|object_ref_start|>red square<|object_ref_end|><|box_start|>"
        "<12><999>,<0><5><7><8><|box_end|>, <|object_ref_start|>猫<|object_ref_end|>"
    )
    ids = tok(text)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert "<999>" in pieces and "<|box_start|>" in pieces
    assert tok.decode(ids, skip_special_tokens=False) == text


def test_chat_template_renders_upstream_prompt(processor):
    from PIL import Image

    from converters.prompts import build_messages

    image = Image.new("RGB", (56, 56))
    text = processor.apply_chat_template(
        build_messages("Point to cat.", image),
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        "Point to cat.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_image_processor_is_qwen2vl_with_upstream_bounds(processor):
    from PIL import Image

    ip = processor.image_processor
    assert type(ip).__name__ == "Qwen2VLImageProcessorPil"
    out = ip(images=[Image.new("RGB", (112, 112))], return_tensors="pt")
    # 112x112 is exactly min_pixels: 8x8 patches of 14 px, 4x4 visual tokens
    assert out["image_grid_thw"].tolist() == [[1, 8, 8]]


def test_config_has_the_settings_that_make_it_learn(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    text = config["text_config"]
    assert text["rope_parameters"]["rope_theta"] == tiny_model.ROPE_THETA
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    assert sum(text["rope_parameters"]["mrope_section"]) == head_dim // 2
    assert text["num_hidden_layers"] == 2
    assert config["vision_config"]["patch_size"] == 14
    assert config["vision_config"]["spatial_merge_size"] == 2


def test_loads_through_the_engine_loader(tiny_model_dir):
    import torch

    from worker.engines.transformers_loading import load_model

    model, processor = load_model(str(tiny_model_dir), device="cpu")
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert model.dtype == torch.float32
    assert processor.tokenizer.padding_side == "left"
    assert 0.5e6 < model.num_parameters() < 2e6


def test_bin_embeddings_are_a_smooth_code(tiny_model_dir):
    import torch

    from worker.engines.transformers_loading import load_model

    model, processor = load_model(str(tiny_model_dir), device="cpu")
    first = processor.tokenizer.convert_tokens_to_ids("<0>")
    bins = model.get_input_embeddings().weight[first : first + 1000]
    near = torch.cosine_similarity(bins[500], bins[501], dim=0)
    far = torch.cosine_similarity(bins[500], bins[0], dim=0)
    assert near > 0.99
    assert far < near - 0.3


def test_bin_code_shape_and_range():
    code = tiny_model.bin_code(1000, 16)
    assert tuple(code.shape) == (1000, 16)
    assert float(code.abs().max()) <= 1.0
