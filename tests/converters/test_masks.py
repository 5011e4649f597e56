import subprocess
import sys

import numpy as np
import pytest

from converters import masks


def _blob(height: int = 48, width: int = 64) -> np.ndarray:
    """A disc plus a detached rectangle: two components, no straight-only shape."""
    yy, xx = np.mgrid[:height, :width]
    disc = (xx - 20) ** 2 + (yy - 22) ** 2 <= 12**2
    mask = disc.astype(np.uint8)
    mask[5:12, 45:60] = 1
    return mask


def test_rle_round_trip_is_exact_and_counts_is_str():
    mask = _blob()
    rle = masks.mask_to_rle(mask)
    assert rle["size"] == [48, 64]
    assert isinstance(rle["counts"], str)
    np.testing.assert_array_equal(masks.rle_to_mask(rle), mask)


def test_rle_accepts_bytes_and_uncompressed_counts():
    mask = np.zeros((4, 3), np.uint8)
    mask[1:3, 1] = 1
    rle = masks.mask_to_rle(mask)
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode()}
    np.testing.assert_array_equal(masks.rle_to_mask(as_bytes), mask)
    # Uncompressed COCO RLE: column-major run lengths starting with zeros.
    uncompressed = {"size": [4, 3], "counts": [5, 2, 5]}
    np.testing.assert_array_equal(masks.rle_to_mask(uncompressed), mask)


def test_area_and_bbox_from_rle():
    mask = np.zeros((30, 40), np.uint8)
    mask[5:15, 10:30] = 1
    rle = masks.mask_to_rle(mask)
    assert masks.rle_area(rle) == 200
    assert masks.rle_bbox(rle) == (10.0, 5.0, 30.0, 15.0)


def test_box_to_rle_covers_exactly_the_box_pixels():
    rle = masks.box_to_rle((10, 5, 30, 15), 40, 30)
    mask = masks.rle_to_mask(rle)
    assert mask.sum() == 200
    assert mask[5:15, 10:30].all()


def test_brush_round_trip_is_exact():
    mask = _blob()
    brush = masks.mask_to_brush_rle(mask)
    assert all(isinstance(v, int) and 0 <= v <= 255 for v in brush)
    np.testing.assert_array_equal(masks.brush_rle_to_mask(brush, 64, 48), mask)


def test_brush_matches_sdk_decoding_of_alpha_channel():
    from label_studio_sdk.converter.brush import decode_rle

    mask = _blob()
    rgba = decode_rle(masks.mask_to_brush_rle(mask)).reshape(48, 64, 4)
    np.testing.assert_array_equal(rgba[:, :, 3], mask * 255)


def test_brush_coco_rle_conversions_agree():
    mask = _blob()
    rle = masks.mask_to_rle(mask)
    brush = masks.rle_to_brush_rle(rle)
    assert masks.brush_rle_to_rle(brush, 64, 48) == rle


def test_brush_with_wrong_size_names_the_sizes():
    brush = masks.mask_to_brush_rle(_blob())
    with pytest.raises(masks.MaskError, match="original_width"):
        masks.brush_rle_to_mask(brush, 63, 48)


def test_mask_to_polygons_largest_first_and_close_to_mask():
    mask = _blob()
    polygons = masks.mask_to_polygons(mask, largest_only=False)
    assert len(polygons) == 2
    largest = masks.polygon_to_mask(polygons[0], 64, 48)
    disc = mask.copy()
    disc[5:12, 45:60] = 0
    iou = (largest & disc).sum() / (largest | disc).sum()
    assert iou > 0.85
    # Every vertex lies inside the mask's pixels (on a boundary pixel centre).
    for x, y in polygons[0]:
        assert mask[int(y), int(x)] == 1


def test_mask_to_polygon_simplifies_straight_edges():
    mask = np.zeros((50, 80), np.uint8)
    mask[10:40, 20:70] = 1
    polygon = masks.mask_to_polygon(mask)
    assert sorted(polygon) == [(20.5, 10.5), (20.5, 39.5), (69.5, 10.5), (69.5, 39.5)]


def test_tolerance_trades_vertices_for_precision():
    mask = _blob()
    fine = masks.mask_to_polygon(mask, tolerance=0.5)
    coarse = masks.mask_to_polygon(mask, tolerance=4.0)
    assert len(coarse) < len(fine)


def test_empty_mask_has_no_polygon():
    assert masks.mask_to_polygons(np.zeros((5, 5))) == []
    assert masks.mask_to_polygon(np.zeros((5, 5))) is None


def test_polygon_to_mask_follows_coco_rasterisation():
    mask = masks.polygon_to_mask([(2, 2), (12, 2), (12, 8), (2, 8)], 20, 20)
    assert mask.sum() == 60
    assert mask[2:8, 2:12].all()


def test_bad_inputs_name_the_problem():
    with pytest.raises(masks.MaskError, match="2-D"):
        masks.mask_to_rle(np.zeros((2, 2, 3)))
    with pytest.raises(masks.MaskError, match="COCO RLE"):
        masks.rle_to_mask({"counts": "abc"})
    with pytest.raises(masks.MaskError, match="at least 3"):
        masks.polygon_to_rle([(0, 0), (1, 1)], 4, 4)


def test_converters_and_the_engines_import_without_pycocotools():
    """.venv-vllm and slim GPU images carry no pycocotools: importing the parser
    and the vLLM engine must not need it; a mask conversion names what is missing."""
    code = (
        "import sys; sys.modules['pycocotools'] = None\n"
        "import converters, worker.engines.vllm_engine\n"
        "from converters import masks\n"
        "import numpy as np\n"
        "try:\n"
        "    masks.mask_to_rle(np.ones((2, 2), dtype=np.uint8))\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "pip install pycocotools" in done.stdout


def _brush_header(values: int, word_bits: int = 8) -> str:
    """The bits of a brush RLE header: value count, word size, run sizes."""
    return f"{values:032b}{word_bits - 1:05b}" + "".join(
        f"{n - 1:04b}" for n in (3, 4, 8, 16)
    )


def _brush_bytes(bits: str) -> list[int]:
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]


def test_brush_literal_runs_match_the_sdk():
    """RGBA values that change every pixel use the RLE's literal runs."""
    from label_studio_sdk.converter.brush import decode_rle, encode_rle

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 3, size=(7, 9, 4), dtype=np.uint8) * 100
    brush = encode_rle(rgba.ravel())
    expected = (decode_rle(brush).reshape(7, 9, 4)[:, :, 3] > 0).astype(np.uint8)
    np.testing.assert_array_equal(masks.brush_rle_to_mask(brush, 9, 7), expected)


def test_brush_header_is_checked_before_anything_is_allocated():
    """A 20 KB RLE declaring 400 M values for a 200x100 region: refused from the
    header, without the 400 MB the SDK's decoder allocates first."""
    import tracemalloc

    run = "1" + "11" + "1" * 16 + "11111111"  # one repeated run of 65536 x 255
    brush = _brush_bytes(_brush_header(400_000_000) + run * 6000)
    assert len(brush) < 21_000
    tracemalloc.start()
    try:
        with pytest.raises(masks.MaskError, match=r"400000000 values.*200x100"):
            masks.brush_rle_to_mask(brush, 200, 100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 1024**2


def test_brush_larger_than_the_pixel_limit_is_refused_by_its_size():
    brush = _brush_bytes(_brush_header(4 * 9000 * 9000))
    with pytest.raises(masks.MaskError, match=r"9000x9000.*limit"):
        masks.brush_rle_to_mask(brush, 9000, 9000)
    with pytest.raises(masks.MaskError, match="limit of 100"):
        masks.brush_rle_to_mask(_blob_brush(), 64, 48, max_pixels=100)


def _blob_brush() -> list[int]:
    return masks.mask_to_brush_rle(_blob())


@pytest.mark.parametrize(
    ("width", "height", "match"),
    [(0, 48, "positive"), (-64, 48, "positive"), ("wide", 48, "integers")],
)
def test_brush_with_bad_size_names_it(width, height, match):
    with pytest.raises(masks.MaskError, match=match):
        masks.brush_rle_to_mask(_blob_brush(), width, height)


def test_brush_run_past_the_declared_count_is_refused():
    """A 2x1 mask (8 values) whose one run claims 65536 values."""
    run = "1" + "11" + "1" * 16 + "11111111"
    with pytest.raises(masks.MaskError, match="past the 8 it declares"):
        masks.brush_rle_to_mask(_brush_bytes(_brush_header(8) + run), 2, 1)


@pytest.mark.parametrize(
    ("brush", "match"),
    [
        (None, "ends early"),
        ([1, 2, 300], "0..255"),
        ([[1, 2]], "0..255"),
        (["x"], "0..255"),
    ],
)
def test_brush_malformed_bytes_are_named(brush, match):
    if brush is None:  # header of 8 values, then nothing
        brush = _brush_bytes(_brush_header(8))
    with pytest.raises(masks.MaskError, match=match):
        masks.brush_rle_to_mask(brush, 2, 1)


def test_brush_with_words_wider_than_a_byte_is_refused():
    brush = _brush_bytes(_brush_header(8, word_bits=16) + "1" + "00" + "111" + "1" * 16)
    with pytest.raises(masks.MaskError, match="16 bits"):
        masks.brush_rle_to_mask(brush, 2, 1)


def test_rle_paste_places_a_crop_exactly_like_a_numpy_paste():
    rng = np.random.default_rng(7)
    for _ in range(200):
        height, width = (int(v) for v in rng.integers(1, 25, 2))
        crop_h, crop_w = (
            int(rng.integers(1, height + 1)),
            int(rng.integers(1, width + 1)),
        )
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        crop = (rng.random((crop_h, crop_w)) < rng.random()).astype(np.uint8)
        expected = np.zeros((height, width), np.uint8)
        expected[top : top + crop_h, left : left + crop_w] = crop
        pasted = masks.rle_paste(masks.mask_to_rle(crop), left, top, width, height)
        assert pasted == masks.mask_to_rle(expected)


def test_rle_paste_by_hand_and_refuses_a_crop_that_does_not_fit():
    crop = np.array([[1, 0], [1, 1]], np.uint8)
    pasted = masks.rle_paste(masks.mask_to_rle(crop), 1, 2, 4, 5)
    expected = np.zeros((5, 4), np.uint8)
    expected[2:4, 1:3] = crop
    np.testing.assert_array_equal(masks.rle_to_mask(pasted), expected)
    with pytest.raises(masks.MaskError, match="does not fit"):
        masks.rle_paste(masks.mask_to_rle(crop), 3, 0, 4, 5)


def test_rle_union_is_the_pixelwise_or():
    a, b = np.zeros((4, 6), np.uint8), np.zeros((4, 6), np.uint8)
    a[0:2, 0:3] = 1
    b[1:4, 2:6] = 1
    union = masks.rle_union([masks.mask_to_rle(a), masks.mask_to_rle(b)])
    np.testing.assert_array_equal(masks.rle_to_mask(union), a | b)
    with pytest.raises(masks.MaskError, match="differ in size"):
        masks.rle_union([masks.mask_to_rle(a), masks.mask_to_rle(np.ones((2, 2)))])
