import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from converters.masks import rle_to_mask
from converters.prediction import Prediction, RegionType
from worker import sam as sam_module
from worker.sam import (
    MaskingUnavailable,
    MaskPromptError,
    SamMasker,
    build_test_sam,
    load_masker,
    model_type_from_checkpoint,
)

WIDTH, HEIGHT = 96, 64


def _image(seed=0, size=(WIDTH, HEIGHT)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _box(x0, y0, x1, y1, label="cat"):
    return Prediction(
        type=RegionType.BOX, label=label, coords=(x0, y0, x1, y1), score=0.9
    )


class _Counting:
    """Wraps a predictor method, counting calls (the real method still runs)."""

    def __init__(self, method):
        self.method, self.calls = method, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.method(*args, **kwargs)


@pytest.fixture
def masker():
    masker = SamMasker(build_test_sam(seed=0), device="cpu")
    masker.predictor.predict_torch = _Counting(masker.predictor.predict_torch)
    return masker


def test_n_boxes_give_n_masks_at_the_original_size_in_one_call(masker):
    boxes = [(5, 5, 40, 30), (50, 10, 90, 60), (0, 0, 96, 64)]
    masks, scores = masker.box_masks(_image(), boxes)
    assert len(masks) == len(scores) == 3
    for mask in masks:
        assert mask.shape == (HEIGHT, WIDTH)
        assert mask.dtype == bool
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert masker.embeddings == 1
    assert masker.predictor.predict_torch.calls == 1


def test_batched_masks_match_one_box_at_a_time(masker):
    image = _image()
    boxes = [(5, 5, 40, 30), (50, 10, 90, 60), (20, 20, 70, 50)]
    together, _ = masker.box_masks(image, boxes)
    for box, batched in zip(boxes, together, strict=True):
        (alone,), _ = masker.box_masks(image, [box])
        assert (alone == batched).mean() > 0.999
    assert masker.embeddings == 1  # same image: embedded once for all calls


def test_huge_images_split_the_boxes_over_calls(masker, monkeypatch):
    monkeypatch.setattr(sam_module, "MAX_MASK_PIXELS_PER_CALL", WIDTH * HEIGHT * 2)
    image = _image()
    boxes = [(i * 10, 0, i * 10 + 20, 40) for i in range(5)]
    split, _ = masker.box_masks(image, boxes)
    assert masker.predictor.predict_torch.calls == 3  # 2 + 2 + 1
    monkeypatch.setattr(sam_module, "MAX_MASK_PIXELS_PER_CALL", 10**9)
    whole, _ = masker.box_masks(image, boxes)
    assert len(split) == 5
    for a, b in zip(split, whole, strict=True):
        assert (a == b).mean() > 0.999


def test_a_new_image_is_embedded_again(masker):
    masker.box_masks(_image(0), [(0, 0, 10, 10)])
    masker.box_masks(_image(0), [(5, 5, 20, 20)])
    masker.box_masks(_image(1), [(0, 0, 10, 10)])
    assert masker.embeddings == 2


def test_masker_sets_rle_masks_on_boxes_and_leaves_the_rest(masker):
    point = Prediction(type=RegionType.POINT, label="dot", coords=(3, 4), score=0.5)
    predictions = [_box(5, 5, 40, 30), point, _box(50, 10, 90, 60, "dog")]
    out = masker(_image(), predictions, SimpleNamespace(masks="rle"))
    assert [p.type for p in out] == [RegionType.BOX, RegionType.POINT, RegionType.BOX]
    assert out[1] is point
    for before, after in ((predictions[0], out[0]), (predictions[2], out[2])):
        assert after.coords == before.coords and after.label == before.label
        assert after.score == before.score
        assert after.mask["size"] == [HEIGHT, WIDTH]
        assert isinstance(after.mask["counts"], str)
        assert rle_to_mask(after.mask).shape == (HEIGHT, WIDTH)
    assert masker.predictor.predict_torch.calls == 1


def test_brush_output_carries_the_same_coco_rle(masker):
    out = masker(_image(), [_box(5, 5, 40, 30)], SimpleNamespace(masks="brush"))
    assert out[0].type is RegionType.BOX and out[0].mask["size"] == [HEIGHT, WIDTH]


def test_polygon_output_replaces_boxes_by_polygons_of_their_masks(masker):
    boxes = [_box(5, 5, 40, 30), _box(50, 10, 90, 60, "dog")]
    out = masker(_image(), boxes, SimpleNamespace(masks="polygon"))
    assert [p.type for p in out] == [RegionType.POLYGON, RegionType.POLYGON]
    assert [p.label for p in out] == ["cat", "dog"]
    for prediction in out:
        assert len(prediction.coords) >= 3
        for x, y in prediction.coords:
            assert 0 <= x <= WIDTH and 0 <= y <= HEIGHT
        assert prediction.mask["size"] == [HEIGHT, WIDTH]


def test_empty_mask_polygon_falls_back_to_the_box_corners(masker, monkeypatch):
    def empty(image, boxes):
        return [np.zeros((HEIGHT, WIDTH), bool) for _ in boxes], [0.0] * len(boxes)

    monkeypatch.setattr(masker, "box_masks", empty)
    (out,) = masker(_image(), [_box(5, 5, 40, 30)], SimpleNamespace(masks="polygon"))
    assert out.coords == ((5, 5), (40, 5), (40, 30), (5, 30))


def test_no_masks_asked_means_no_work(masker):
    predictions = [_box(5, 5, 40, 30)]
    assert masker(_image(), predictions, SimpleNamespace(masks="none")) is predictions
    assert masker.embeddings == 0


def test_point_mask_gives_one_region_at_the_original_size(masker):
    region = masker.point_mask(
        _image(), [[30, 20, 1], [80, 50, 0]], label="cat", output="rle"
    )
    assert region.type is RegionType.BOX and region.label == "cat"
    assert region.mask["size"] == [HEIGHT, WIDTH]
    assert 0.0 <= region.score <= 1.0
    mask = rle_to_mask(region.mask)
    if mask.any():
        ys, xs = np.nonzero(mask)
        assert region.coords == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    else:
        assert region.coords == (0, 0, 0, 0)


def test_point_mask_as_polygon(masker):
    region = masker.point_mask(_image(), [[30, 20, 1]], output="polygon")
    assert region.type is RegionType.POLYGON
    assert region.mask is not None


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([], "at least one point"),
        ([[10, 10, 0]], "positive point"),
        ([[10, 10]], r"point 0 must be \[x, y, positive\]"),
        ([[10, 10, 1], [float("nan"), 3, 1]], "point 1 must be finite"),
        ([[10, 10, 2]], "positive 0/1"),
    ],
)
def test_bad_points_are_named(masker, points, message):
    with pytest.raises(MaskPromptError, match=message):
        masker.point_mask(_image(), points)


def test_bad_box_is_named(masker):
    with pytest.raises(MaskPromptError, match="box 1"):
        masker.box_masks(_image(), [(0, 0, 5, 5), (0, 0, 5)])


def test_no_boxes_embeds_nothing(masker):
    assert masker.box_masks(_image(), []) == ([], [])
    assert masker.embeddings == 0


# Loading ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("sam_vit_h_4b8939.pth", "vit_h"),
        ("sam_vit_l_0b3195.pth", "vit_l"),
        ("/models/SAM_VIT_B_01ec64.pth", "vit_b"),
        ("mobile_sam.pt", None),
        ("sam_vit_base.pth", None),
    ],
)
def test_model_type_from_checkpoint_name(name, kind):
    assert model_type_from_checkpoint(name) == kind


def test_no_checkpoint_means_masking_unavailable():
    with pytest.raises(MaskingUnavailable, match="SAM_CHECKPOINT"):
        load_masker("")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(MaskingUnavailable, match="is not a file"):
        load_masker(str(tmp_path / "sam_vit_b.pth"))


def test_unknown_type_names_the_setting(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"x")
    with pytest.raises(MaskingUnavailable, match="SAM_MODEL_TYPE"):
        load_masker(str(path))
    with pytest.raises(MaskingUnavailable, match="vit_x"):
        load_masker(str(path), "vit_x")


def test_weights_of_another_model_are_refused(tmp_path):
    import torch

    path = tmp_path / "sam_vit_b_mine.pth"
    torch.save(build_test_sam().state_dict(), path)
    with pytest.raises(MaskingUnavailable, match="does not hold vit_b weights"):
        load_masker(str(path))


def test_a_damaged_checkpoint_is_named(tmp_path):
    path = tmp_path / "sam_vit_b_cut.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(MaskingUnavailable, match="could not be read"):
        load_masker(str(path))


@pytest.mark.slow
def test_real_vit_b_from_a_checkpoint_file(tmp_path, capsys):
    """The real builder and checkpoint path: random vit_b weights saved and loaded.

    Full-size vit_b embeds a 1024 px input: about 13 s and 3.6 GB on 2 cores.
    """
    import torch
    from segment_anything import build_sam_vit_b

    started = time.perf_counter()
    path = tmp_path / "sam_vit_b_random.pth"
    torch.manual_seed(0)
    torch.save(build_sam_vit_b(checkpoint=None).state_dict(), path)
    masker = load_masker(str(path), device="cpu")
    loaded = time.perf_counter()
    image = _image(size=(160, 120))
    out = masker(
        image,
        [_box(10, 10, 80, 60), _box(90, 20, 150, 110)],
        SimpleNamespace(masks="rle"),
    )
    done = time.perf_counter()
    assert [p.mask["size"] for p in out] == [[120, 160], [120, 160]]
    assert masker.embeddings == 1
    with capsys.disabled():
        print(f"\nvit_b: build+save+load {loaded - started:.1f} s, ", end="")
        print(f"embed + 2 masks {done - loaded:.1f} s")


def test_an_image_reduced_for_the_model_gets_masks_at_its_original_size(masker):
    """``decode_image`` hands the pipeline a model-sized image of a large photo;
    box and point prompts are in the photo's pixels, and so are the masks."""
    import io

    from common.images.decode import decode_image
    from converters.geometry import MAX_PIXELS

    photo = _image(size=(300, 200)).resize((3000, 2000), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    reduced = decode_image(buffer.getvalue(), source="x", fit_pixels=MAX_PIXELS)
    assert reduced.width < 3000
    masks, _ = masker.box_masks(reduced, [(100, 100, 1500, 1000)])
    assert masks[0].shape == (2000, 3000)
    region = masker.point_mask(reduced, [[2900, 1900, 1]])
    assert rle_to_mask(region.mask).shape == (2000, 3000)
    assert masker.predictor.original_size == (2000, 3000)
