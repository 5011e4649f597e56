"""Tiled inference in the pipeline (worker.tiling_step) with an engine that
sees: ``RedBoxEngine`` boxes the red squares in each image it is given (the
part inside it, as Rex-Omni boxes an object cut by the frame), so every
tile's answer, the batch and the merge can be checked by hand. The tiny
trained model on larger scenes is in test_tiling_quality.py."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from common.images.decode import ORIGINAL_SIZE_KEY, original_size
from common.jobspec import FinishReason, ImageJob, ModelCall
from common.tile_options import TileOptions
from converters.answer import format_answer
from converters.geometry import MAX_PIXELS, smart_resize
from converters.prediction import Prediction, RegionType
from converters.tasks import Task
from converters.tiling import Tile
from worker.call_result import PipelineError
from worker.engines.base import Engine, GenerationRequest, GenerationResult
from worker.pipeline import run_batch, run_image_jobs
from worker.tiling_step import (
    MAX_CHUNK_CROP_PIXELS,
    ChunkCrops,
    TilePlan,
    crop_tile,
    decode_pixels,
    plan_tiles,
    tiled_result,
    untiled_note,
    whole_view,
)

RED = (220, 30, 30)
PHRASE = "red square"


def _red_boxes(image: Image.Image) -> list[tuple[int, int, int, int]]:
    """xyxy (exclusive) of each red blob of ``image``, in its pixels."""
    import cv2

    pixels = np.asarray(image.convert("RGB")).astype(int)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
    count, _, stats, _ = cv2.connectedComponentsWithStats(red.astype(np.uint8))
    return [(x, y, x + w, y + h) for x, y, w, h, _ in stats[1:count]]


class RedBoxEngine(Engine):
    """Writes a Rex-Omni answer boxing each red blob of each image (bins of
    that image's own size); records batch sizes and image sizes."""

    name = "red-box-test"

    def __init__(self, max_pixels: int = MAX_PIXELS) -> None:
        self.max_pixels = max_pixels
        self.batch_sizes: list[int] = []
        self.image_sizes: list[tuple[int, int]] = []

    @property
    def model_id(self) -> str:
        return "tests/red-box-engine"

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.batch_sizes.append(len(requests))
        self.image_sizes.extend(r.image.size for r in requests)
        return [self._answer(r.image) for r in requests]

    def _answer(self, image: Image.Image) -> GenerationResult:
        found = [Prediction(RegionType.BOX, PHRASE, b) for b in _red_boxes(image)]
        text = format_answer(Task.DETECTION, found, *image.size, categories=[PHRASE])
        return GenerationResult(
            text=text,
            token_ids=[0],
            token_texts=[text],
            token_logprobs=None,
            finish_reason=FinishReason.STOP,
            prompt_tokens=10,
            output_tokens=5,
            timings={"generate": 0.01},
        )


def _scene(size: tuple[int, int], squares: list[tuple[int, int, int]]) -> Image.Image:
    """Grey image with red squares ``(x0, y0, side)``."""
    image = Image.new("RGB", size, (120, 120, 120))
    draw = ImageDraw.Draw(image)
    for x0, y0, side in squares:
        draw.rectangle((x0, y0, x0 + side - 1, y0 + side - 1), fill=RED)
    return image


def _call(**tile) -> ModelCall:
    return ModelCall(task="detection", categories=[PHRASE], key="boxes", tile=tile)


def assert_boxes(result, expected, tolerance: float = 1.0) -> None:
    """``result``'s boxes are ``expected`` (xyxy), each side within ``tolerance``."""
    found = sorted(p.coords for p in result.predictions)
    assert len(found) == len(expected), found
    for got, want in zip(found, sorted(expected), strict=True):
        assert got == pytest.approx(want, abs=tolerance), (found, expected)


# 448 px in 224 px tiles sharing 56 px: spans 0-224, 168-392, 224-448.
SQUARES = [(20, 20, 40), (200, 60, 40), (380, 300, 40), (100, 400, 40)]
"""Whole in a tile; across the 168/224 seams; across the 392 seam; at the
bottom edge of the image."""


def test_all_tiles_go_in_one_batch_and_each_object_comes_back_once_whole():
    engine = RedBoxEngine()
    image = _scene((448, 448), SQUARES)
    (result,) = run_batch(
        engine, [(image, _call(mode="on", size=224, overlap=0.25, whole_image=False))]
    )
    assert engine.batch_sizes == [9]
    assert len(result.tiles) == 9 and result.tiles[4] == [168, 168, 392, 392]
    expected = sorted((x, y, x + s, y + s) for x, y, s in SQUARES)
    assert_boxes(result, expected, 1)
    assert result.prompt_tokens == 90 and result.output_tokens == 45
    assert result.finish_reason == "stop"
    assert result.raw_text.startswith("[tile 0,0,224,224] <|object_ref_start|>")
    assert result.timings["tile_merge"] >= 0 and result.timings["tile_cut"] >= 0


def test_the_whole_image_pass_joins_the_batch_and_keeps_a_large_object_whole():
    engine = RedBoxEngine()
    image = _scene((448, 448), [(120, 120, 200), (20, 20, 30)])  # 200 > overlap
    (result,) = run_batch(
        engine, [(image, _call(mode="on", size=224, overlap=0.25, whole_image=True))]
    )
    assert engine.batch_sizes == [10]
    assert engine.image_sizes[-1] == (448, 448)  # the whole image, last
    assert_boxes(result, [(20, 20, 50, 50), (120, 120, 320, 320)], 1)


def test_tiles_join_the_batch_of_the_other_calls_and_images():
    engine = RedBoxEngine()
    image = _scene((448, 448), SQUARES)
    pairs = [
        (image, _call(mode="on", size=224, overlap=0.25, whole_image=False)),
        (image, _call(mode="off")),
        (_scene((112, 112), [(10, 10, 30)]), _call(mode="on", size=224)),
    ]
    tiled, untiled, small = run_batch(engine, pairs)
    assert engine.batch_sizes == [11]  # 9 tiles + 1 + 1 (a one-tile image: whole)
    assert untiled.tiles == [] and small.tiles == []
    assert len(tiled.predictions) == 4
    assert_boxes(small, [(10, 10, 40, 40)], 1)


def test_limits_apply_after_the_merge():
    image = _scene((448, 448), SQUARES)
    call = _call(mode="on", size=224, overlap=0.25, whole_image=False)
    call.max_instances = 2
    (result,) = run_batch(RedBoxEngine(), [(image, call)])
    assert len(result.predictions) == 2
    assert "kept the 2 best of 4 predictions (max_instances)" in result.warnings


def test_keypoints_are_never_tiled_and_say_so():
    image = _scene((448, 448), [])
    call = ModelCall(
        task="keypoint",
        categories=["person"],
        keypoint_type="person",
        tile={"mode": "on", "size": 224},
    )
    assert plan_tiles(image, call, TileOptions(), MAX_PIXELS) is None
    note = untiled_note(image, call, TileOptions(), MAX_PIXELS)
    assert note.startswith("not tiled: keypoint runs on the whole image")
    off = ModelCall(task="keypoint", categories=["person"], tile={"mode": "off"})
    assert untiled_note(image, off, TileOptions(), MAX_PIXELS) is None


def test_auto_tiles_only_an_image_the_model_would_shrink_past_the_factor():
    image = _scene((448, 448), [])
    call = _call(size=112, overlap=0.0)  # mode from the base: auto
    base = TileOptions(min_shrink=3.0)
    assert plan_tiles(image, call, base, max_pixels=112 * 112).tiles[0] == Tile(
        0, 0, 112, 112
    )  # 448 / 112 = 4 > 3
    assert plan_tiles(image, call, base, max_pixels=150 * 150) is None  # 2.99
    assert plan_tiles(image, call, base, max_pixels=MAX_PIXELS) is None


def test_more_tiles_than_the_cap_fail_the_call_naming_the_count():
    image = _scene((448, 448), [])
    call = _call(mode="on", size=112, overlap=0.5)
    with pytest.raises(PipelineError, match=r"is 49 tiles, more than 20 \("):
        plan_tiles(image, call, TileOptions(max_tiles=20), MAX_PIXELS)


def test_a_tiled_image_is_decoded_only_as_far_as_its_tiles_need(tmp_path):
    # 4000 x 2000 in 2000 px tiles: a tile has twice the model's 2 MP, so the
    # image is decoded at half its area (not 8 MP), each tile then fits.
    path = tmp_path / "wide.png"
    _scene((4000, 2000), [(1000, 1000, 100), (2950, 400, 100)]).save(path)
    engine = RedBoxEngine()
    tiled = _call(mode="on", size=2000, overlap=0.0)
    job = ImageJob(id="1", image=str(path), calls=[tiled], local_paths=True)
    (result,) = run_image_jobs(engine, [job])
    assert (result.width, result.height) == (4000, 2000)
    whole_h, whole_w = smart_resize(2000, 4000)
    assert engine.image_sizes[-1] == (whole_w, whole_h)  # the whole-image pass
    for width, height in engine.image_sizes:
        assert width * height <= MAX_PIXELS
    (call,) = result.calls
    assert call.tiles == [[0, 0, 2000, 2000], [2000, 0, 4000, 2000]]
    assert_boxes(call, [(1000, 1000, 1100, 1100), (2950, 400, 3050, 500)], 4)


def test_decode_pixels_is_the_models_size_unless_a_call_tiles():
    calls = [_call(mode="off"), ModelCall(task="keypoint", tile={"mode": "on"})]
    assert (
        decode_pixels(8000, 6000, calls=calls, base=TileOptions(), max_pixels=1000)
        == 1000
    )
    small_tiles = [_call(mode="on", size=1000)]  # a tile fits 2 MP: every pixel
    assert (
        decode_pixels(
            8000, 6000, calls=small_tiles, base=TileOptions(), max_pixels=MAX_PIXELS
        )
        == 48_000_000
    )
    big_tiles = [_call(mode="on", size=4000)]  # 16 MP tiles seen at 2 MP
    assert (
        decode_pixels(
            8000, 6000, calls=big_tiles, base=TileOptions(), max_pixels=2_000_000
        )
        == 6_000_000
    )


def test_a_tile_of_a_reduced_decode_keeps_its_size_in_original_pixels():
    decoded = _scene((224, 224), [(56, 56, 20)])
    decoded.info[ORIGINAL_SIZE_KEY] = (448, 448)  # decoded at half a side
    crop = crop_tile(decoded, Tile(112, 112, 224, 224))
    assert crop.size == (56, 56)
    assert original_size(crop) == (112, 112)
    view = whole_view(decoded, max_pixels=112 * 112)
    assert view.size == (112, 112) and original_size(view) == (448, 448)
    assert whole_view(decoded, max_pixels=MAX_PIXELS) is decoded


def _generation(
    text: str, finish: FinishReason = FinishReason.STOP
) -> GenerationResult:
    return GenerationResult(
        text=text,
        token_ids=[],
        token_texts=[],
        token_logprobs=None,
        finish_reason=finish,
        prompt_tokens=3,
        output_tokens=2,
        timings={"generate": 0.5, "batch_size": 2.0},
    )


def test_a_runaway_tile_makes_the_call_runaway_and_truncated():
    image = _scene((200, 100), [])
    plan = TilePlan((Tile(0, 0, 100, 100), Tile(100, 0, 200, 100)), whole_image=False)
    box = format_answer(
        Task.DETECTION,
        [Prediction(RegionType.BOX, PHRASE, (10, 10, 50, 50))],
        100,
        100,
        categories=[PHRASE],
    )
    generations = [_generation(box), _generation(box, FinishReason.RUNAWAY)]
    result = tiled_result(image, _call(mode="on"), plan, generations, masker=None)
    assert result.finish_reason == "runaway" and result.truncated
    assert "generation stopped by the runaway guard" in result.warnings[-1]
    assert_boxes(result, [(10, 10, 50, 50), (110, 10, 150, 50)], 1)
    assert result.prompt_tokens == 6 and result.timings["generate"] == 0.5


def test_auto_grows_its_tiles_until_the_grid_fits_the_cap_and_says_so():
    image = _scene((448, 448), [])
    base = TileOptions(min_shrink=3.0, max_tiles=9)
    call = _call(size=112, overlap=0.0)  # auto: 448 / 112 = 4 > 3
    plan = plan_tiles(image, call, base, max_pixels=112 * 112)
    # 112 px: 16 tiles; 140 px: still 4 a side; 168 px (6 x 28): 3 a side
    assert len(plan.tiles) == 9 and plan.tiles[0] == Tile(0, 0, 168, 168)
    assert plan.note == (
        "tiles grown from 112 to 168 px: 16 tiles were more than 9 "
        "(REXLABEL_TILE_MAX_TILES), now 9"
    )
    (result,) = run_batch(
        RedBoxEngine(max_pixels=112 * 112), [(image, call)], tiling=base
    )
    assert result.warnings[-1] == plan.note and len(result.tiles) == 9
    on = _call(mode="on", size=112, overlap=0.0)
    with pytest.raises(PipelineError, match=r"is 16 tiles, more than 9 \("):
        plan_tiles(image, on, base, max_pixels=112 * 112)


def test_tiles_of_a_reduced_decode_keep_the_decodes_detail_and_map_back():
    # 448 px decoded at half a side: 112 px tiles of the original would be
    # 56 px crops; the tiles become 224 original px, 112 decoded px each.
    decoded = _scene((224, 224), [(20, 20, 20), (150, 130, 30)])
    decoded.info[ORIGINAL_SIZE_KEY] = (448, 448)
    engine = RedBoxEngine()
    call = _call(mode="on", size=112, overlap=0.0, whole_image=False)
    (result,) = run_batch(engine, [(decoded, call)])
    assert engine.image_sizes == [(112, 112)] * 4
    assert result.tiles == [
        [0, 0, 224, 224],
        [224, 0, 448, 224],
        [0, 224, 224, 448],
        [224, 224, 448, 448],
    ]
    assert_boxes(result, [(40, 40, 80, 80), (300, 260, 360, 320)], 1)


class SeeingEngine(RedBoxEngine):
    """Also records the identity of every image it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.image_ids: list[int] = []

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.image_ids.extend(id(r.image) for r in requests)
        return super().generate(requests)


def test_calls_tiling_one_image_alike_share_its_crops():
    image = _scene((448, 448), SQUARES)
    tiled = _call(mode="on", size=224, overlap=0.25)
    other = ModelCall(
        task="detection", categories=["circle"], key="b", tile=dict(tiled.tile)
    )
    engine = SeeingEngine()
    first, second = run_batch(engine, [(image, tiled), (image, other)])
    assert len(engine.image_ids) == 20  # 9 tiles and the whole image, twice
    assert engine.image_ids[:10] == engine.image_ids[10:]  # the same crops
    assert len(set(engine.image_ids)) == 10
    assert first.tiles == second.tiles and len(first.predictions) == 4


def test_a_chunk_cuts_at_most_its_cap_of_crop_pixels_naming_them():
    crops = ChunkCrops(MAX_PIXELS, max_crop_pixels=12 * 224 * 224)
    call = _call(mode="on", size=224, overlap=0.25)
    one, two = _scene((448, 448), []), _scene((448, 448), [])
    plan = plan_tiles(one, call, TileOptions(), MAX_PIXELS)
    assert len(crops.views(one, plan, call)) == 10 and crops.cut == 9
    assert len(crops.views(one, plan, call)) == 10 and crops.cut == 9  # shared
    assert crops.crop_pixels == 9 * 224 * 224
    with pytest.raises(PipelineError, match=r"make this chunk's crops 903,168 pixels"):
        crops.views(two, plan, call)
    options = TileOptions()
    full_chunk = 4 * options.max_tiles * options.size**2  # 4 images, 64 tiles each
    assert MAX_CHUNK_CROP_PIXELS >= full_chunk
    # many small tiles weigh what they are: six 448 px scenes in 49 tiles each
    small = ChunkCrops(MAX_PIXELS)
    fine = _call(mode="on", size=112, overlap=0.5)
    for _ in range(6):
        scene = _scene((448, 448), [])
        small.views(scene, plan_tiles(scene, fine, TileOptions(), MAX_PIXELS), fine)
    assert small.cut == 6 * 49


def _answer(boxes: list[tuple[str, tuple]], size: tuple[int, int]) -> str:
    """A detection answer boxing ``(label, xyxy)`` in an image of ``size``."""
    found = [Prediction(RegionType.BOX, label, xyxy) for label, xyxy in boxes]
    return format_answer(Task.DETECTION, found, *size, categories=["car", "person"])


def test_the_merge_knows_which_tile_found_each_region():
    # Tiles x 0..120 and 80..200 (overlap 40, cores split at 100) and the pass.
    image = _scene((200, 100), [])
    plan = TilePlan((Tile(0, 0, 120, 100), Tile(80, 0, 200, 100)), whole_image=True)
    left = _answer(
        [("car", (20, 20, 32, 32)), ("person", (81, 30, 95, 60))], (120, 100)
    )
    # The pass's car is 2-4 px off (IoU 0.48): no larger than the overlap, the
    # left tile answers for it and the pass's is dropped. Its adult (60 x 80)
    # stays, and the child the left tile found whole inside it, 1 px from the
    # right tile's edge at 80, is no cut part: the left tile's edges alone count.
    whole = _answer(
        [("car", (16, 17, 30, 31)), ("person", (70, 10, 130, 90))], (200, 100)
    )
    generations = [
        _generation(left),
        _generation(_answer([], (120, 100))),
        _generation(whole),
    ]
    call = ModelCall(task="detection", categories=["car", "person"], key="boxes")
    result = tiled_result(image, call, plan, generations, masker=None)
    assert_boxes(result, [(20, 20, 32, 32), (70, 10, 130, 90), (81, 30, 95, 60)], 1)
