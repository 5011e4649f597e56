import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converters.geometry import (
    IMAGE_FACTOR,
    MAX_PIXELS,
    MIN_PIXELS,
    bin_to_pixel,
    bins_to_box,
    box_to_bins,
    box_to_tokens,
    pixel_to_bin,
    smart_resize,
    vision_tokens,
)
from converters.grammar import MAX_BIN, bin_token
from tests.converters.conftest import vector_params


@pytest.mark.parametrize("vector", vector_params("smart_resize_vectors"))
def test_smart_resize_vectors(vector):
    width, height = vector["image_size"]
    resized_w, resized_h = vector["resized_size"]
    assert smart_resize(height, width) == (resized_h, resized_w)
    assert vision_tokens(height, width) == vector["vision_tokens"]


@pytest.mark.parametrize("vector", vector_params("pixel_to_bin_vectors"))
def test_pixel_to_bin_vectors(vector):
    width, height = vector["image_size"]
    assert box_to_tokens(vector["box_px"], width, height) == vector["tokens"]


def test_smart_resize_rounds_half_to_even():
    # 42/28 = 1.5 rounds to 2 and 70/28 = 2.5 rounds to 2 (Python round, ties even);
    # 56x56 is under min_pixels, so scale up from there instead: use big sides.
    assert smart_resize(28 * 40 + 14, 28 * 41 + 14) == (28 * 40, 28 * 42)


def test_smart_resize_rejects_extreme_aspect_ratio_and_bad_sides():
    assert smart_resize(10, 2000)[1] == 1988  # exactly 200 is allowed
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 2001)
    with pytest.raises(ValueError, match="positive"):
        smart_resize(0, 100)


@given(st.integers(1, 8000), st.integers(1, 8000))
def test_smart_resize_invariants(height, width):
    if max(height, width) / min(height, width) > 200:
        with pytest.raises(ValueError):
            smart_resize(height, width)
        return
    h_bar, w_bar = smart_resize(height, width)
    assert h_bar % IMAGE_FACTOR == 0 and w_bar % IMAGE_FACTOR == 0
    assert h_bar >= IMAGE_FACTOR and w_bar >= IMAGE_FACTOR
    assert h_bar * w_bar <= MAX_PIXELS
    assert h_bar * w_bar >= MIN_PIXELS


def test_pixel_to_bin_truncates_and_clamps():
    assert pixel_to_bin(640, 640) == MAX_BIN
    assert pixel_to_bin(320, 640) == 499
    assert pixel_to_bin(-3, 640) == 0
    assert pixel_to_bin(10_000, 640) == MAX_BIN
    assert pixel_to_bin(0.999, 999) == 0  # floor, not round


def test_bin_to_pixel_is_upstream_expression():
    assert bin_to_pixel(999, 640) == 640.0
    assert bin_to_pixel(0, 640) == 0.0
    assert bin_to_pixel(100, 1000) == 100 / 999 * 1000
    # The known unstable round trip: bin 63 at W=640 re-encodes to 62.
    assert pixel_to_bin(bin_to_pixel(63, 640), 640) == 62


@given(st.integers(0, MAX_BIN), st.integers(1, 10_000))
def test_bin_round_trip_loses_at_most_one_bin(bin_index, size):
    back = pixel_to_bin(bin_to_pixel(bin_index, size), size)
    assert back in (bin_index, bin_index - 1)


@given(st.floats(-100, 5000, allow_nan=False), st.integers(1, 4000))
def test_pixel_round_trip_is_within_one_bin(value, size):
    decoded = bin_to_pixel(pixel_to_bin(value, size), size)
    clamped = min(max(value, 0.0), float(size))
    assert decoded <= clamped + 1e-9
    assert clamped - decoded <= size / MAX_BIN + 1e-9


def test_box_helpers():
    bins = box_to_bins((644, 1210, 842, 1361), 2246, 1590)
    assert bins == (286, 760, 374, 855)
    box = bins_to_box(bins, 2246, 1590)
    assert all(
        math.isclose(a, b / 999 * s)
        for a, b, s in zip(box, bins, (2246, 1590, 2246, 1590), strict=True)
    )
    assert bin_token(7) == "<7>"
