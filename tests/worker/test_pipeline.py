"""The pipeline on the real transformers engine and the tiny model."""

from __future__ import annotations

import pytest
from PIL import Image

from common.jobspec import ImageJob, ImageResult, ModelCall
from converters.prediction import Prediction, RegionType
from converters.tasks import Task
from worker.engines.base import Engine, GenerationRequest, GenerationResult
from worker.pipeline import (
    ENGINE_DOWN_AFTER,
    PipelineError,
    limit_predictions,
    run_batch,
    run_image_jobs,
)

BOX_GROUP = "<|object_ref_start|>{p}<|object_ref_end|><|box_start|>{items}<|box_end|>"
B4 = "{B}{B}{B}{B}"


def _image(width=320, height=240) -> Image.Image:
    return Image.new("RGB", (width, height), (40, 90, 160))


def _pairs(image: Image.Image, calls: list[ModelCall]) -> list:
    """Every call about one image, as ``run_batch`` takes them."""
    return [(image, call) for call in calls]


def test_mixed_calls_on_one_image(constrained):
    engine = constrained(
        [
            BOX_GROUP.format(p="red square", items=f"{B4},{B4}")
            + ", "
            + BOX_GROUP.format(p="cat", items="None"),
            BOX_GROUP.format(p="cat", items="{B}{B}"),
            BOX_GROUP.format(p="STOP 42", items="{B}{B}{B}{B}{B}{B}{B}{B}"),
            '```json\n{"person1": {"bbox": "{B}{B}{B}{B}", "keypoints": '
            '{"nose": "{B}{B}", "left eye": "unvisible"}}}\n```',
        ]
    )
    calls = [
        ModelCall(task="detection", categories=["red square", "cat"], key="boxes"),
        ModelCall(task="pointing", categories=["cat"], key="points"),
        ModelCall(task="ocr_polygon", categories=["text line"], key="ocr"),
        ModelCall(
            task="keypoint", categories=["person"], keypoint_type="person", key="pose"
        ),
    ]
    image = _image()
    results = run_batch(engine, _pairs(image, calls))
    assert [r.key for r in results] == ["boxes", "points", "ocr", "pose"]
    assert [r.task for r in results] == [
        Task.DETECTION,
        Task.POINTING,
        Task.OCR_POLYGON,
        Task.KEYPOINT,
    ]
    boxes, points, ocr, pose = results
    assert [p.type for p in boxes.predictions] == [RegionType.BOX, RegionType.BOX]
    assert {p.label for p in boxes.predictions} == {"red square"}
    assert [p.type for p in points.predictions] == [RegionType.POINT]
    assert ocr.predictions[0].type is RegionType.POLYGON
    assert ocr.predictions[0].text == "STOP 42"
    assert ocr.predictions[0].label == "text line"
    assert pose.predictions[0].type is RegionType.KEYPOINT
    assert pose.predictions[0].keypoints["left eye"] is None
    for result in results:
        assert result.finish_reason == "stop" and not result.truncated
        assert result.prompt_tokens > 0 and result.output_tokens > 0
        assert "parse" in result.timings and result.timings["batch_size"] == 4
        for p in result.predictions:
            assert p.score is not None and 0.0 <= p.score <= 1.0
            x0, y0, x1, y1 = p.bbox
            assert 0 <= x0 <= x1 <= image.width and 0 <= y0 <= y1 <= image.height
    assert boxes.raw_text.startswith("<|object_ref_start|>red square")


def test_max_instances_keeps_the_best_scored(constrained):
    template = BOX_GROUP.format(p="cat", items=",".join([B4] * 3))
    call = ModelCall(task="detection", categories=["cat"])
    (full,) = run_batch(constrained([template]), [(_image(), call)])
    assert len(full.predictions) == 3
    limited_call = ModelCall(task="detection", categories=["cat"], max_instances=1)
    (limited,) = run_batch(constrained([template]), [(_image(), limited_call)])
    best = max(full.predictions, key=lambda p: p.score)
    assert len(limited.predictions) == 1
    assert limited.predictions[0].coords == best.coords
    assert any("max_instances" in w for w in limited.warnings)


def test_repeated_items_are_dropped_with_a_warning(constrained):
    item = "<10><20><30><40>"
    engine = constrained([BOX_GROUP.format(p="cat", items=f"{item},{item}")])
    (result,) = run_batch(
        engine, [(_image(), ModelCall(task="detection", categories=["cat"]))]
    )
    assert len(result.predictions) == 1
    assert any("repeated" in w for w in result.warnings)


def test_runaway_generation_is_reported_truncated(constrained):
    engine = constrained(
        [
            "<|object_ref_start|>cat<|object_ref_end|><|box_start|>"
            + "<1><2><3><4>," * 30
        ]
    )
    (result,) = run_batch(
        engine, [(_image(), ModelCall(task="detection", categories=["cat"]))]
    )
    assert result.finish_reason == "runaway"
    assert result.truncated
    assert len(result.predictions) == 1
    assert any("runaway" in w for w in result.warnings)


def test_score_threshold_and_limit_rules():
    def box(score):
        return Prediction(RegionType.BOX, "a", (0, 0, 1, 1), score=score)

    items = [box(0.2), box(0.9), box(None), box(0.5), box(0.7)]
    kept, notes = limit_predictions(items, score_threshold=0.4, max_instances=None)
    assert [p.score for p in kept] == [0.9, None, 0.5, 0.7]
    assert notes and "score_threshold" in notes[0]
    kept, _ = limit_predictions(items, score_threshold=None, max_instances=2)
    assert [p.score for p in kept] == [0.9, 0.7]  # best two, output order kept


class RecordingMasker:
    """Marks boxes with a tiny RLE so the hook's use is visible."""

    def __init__(self):
        self.calls = []

    def __call__(self, image, predictions, call):
        self.calls.append(call.key)
        rle = {"size": [image.height, image.width], "counts": "0"}
        return [p.with_(mask=rle) for p in predictions]


def test_masker_hook_runs_only_for_calls_asking_for_masks(constrained):
    engine = constrained([BOX_GROUP.format(p="cat", items=B4)] * 2)
    masker = RecordingMasker()
    calls = [
        ModelCall(task="detection", categories=["cat"], masks="rle", key="masked"),
        ModelCall(task="detection", categories=["cat"], key="plain"),
    ]
    masked, plain = run_batch(engine, _pairs(_image(), calls), masker=masker)
    assert masker.calls == ["masked"]
    assert masked.predictions[0].mask is not None
    assert plain.predictions[0].mask is None


def test_masks_without_a_masker_name_the_call(tiny_engine):
    call = ModelCall(task="detection", categories=["cat"], masks="polygon", key="seg")
    with pytest.raises(PipelineError, match=r"'seg'.*SAM"):
        run_batch(tiny_engine, [(_image(), call)])


def test_image_jobs_isolate_failures(tiny_engine, tmp_path):
    good = tmp_path / "good.png"
    _image(200, 100).save(good)
    ok = ModelCall(task="detection", categories=["cat"])
    ok.generation = {"max_new_tokens": 4}
    missing = str(tmp_path / "missing.png")
    jobs = [
        ImageJob(id="1", image=str(good), calls=[ok], local_paths=True),
        ImageJob(id="2", image=missing, calls=[ok], local_paths=True),
        ImageJob(
            id="3",
            image=str(good),
            calls=[ok, ModelCall(task="visual_prompting", key="vp")],
            local_paths=True,
        ),
        ImageJob(id="4", image=str(good), calls=[ok]),  # from a request: refused
    ]
    results = run_image_jobs(tiny_engine, jobs)
    assert [r.id for r in results] == ["1", "2", "3", "4"]
    assert results[0].error is None
    assert "read only by the command line" in results[3].error
    assert (results[0].width, results[0].height) == (200, 100)
    assert len(results[0].calls) == 1 and results[0].calls[0].output_tokens <= 4
    assert "missing.png" in results[1].error
    # The failing call is named; the image's other call is kept.
    assert "call 'vp' (visual_prompting)" in results[2].error
    assert [c.task for c in results[2].calls] == [Task.DETECTION]
    # Fetching and decoding is timed per image (the job line's download_s),
    # also when it fails, and survives the JSON round trip.
    assert all(r.load_s > 0 for r in results)
    assert ImageResult.from_dict(results[0].to_dict()).load_s == results[0].load_s


# One failing call among several ------------------------------------------------------
def _answer(phrase: str, items: str) -> str:
    return BOX_GROUP.format(p=phrase, items=items) + "<|im_end|>"


class PhraseEngine(Engine):
    """Answers each prompt with well-formed Rex-Omni text for the phrase it
    asks about (``answers``: phrase -> text). Like a real batched engine, it
    fails the whole batch when one request is bad: here, a prompt naming a
    phrase in ``fail_on``. ``batch_sizes`` records what it was given."""

    name = "phrase-test"

    def __init__(self, answers: dict[str, str], fail_on: tuple[str, ...] = ()):
        self.answers = answers
        self.fail_on = fail_on
        self.batch_sizes: list[int] = []

    @property
    def model_id(self) -> str:
        return "tests/phrase-engine"

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.batch_sizes.append(len(requests))
        for request in requests:
            for phrase in self.fail_on:
                if phrase in request.prompt:
                    raise RuntimeError(f"engine rejected the prompt about {phrase!r}")
        return [self._generation(request.prompt) for request in requests]

    def _generation(self, prompt: str) -> GenerationResult:
        (text,) = [t for p, t in self.answers.items() if p in prompt]
        return GenerationResult(
            text=text.removesuffix("<|im_end|>"),
            token_ids=list(range(len(text))),
            token_texts=list(text),
            token_logprobs=None,
            finish_reason="stop",
            prompt_tokens=len(prompt),
            output_tokens=len(text),
            timings={"generate": 0.01},
        )


PHRASE_ANSWERS = {
    "cat": _answer("cat", "<100><100><400><400>"),
    "dog": _answer("dog", "<500><500>"),
    "broken sign": _answer("broken sign", "<1><1><2><2>"),
}
"""What PhraseEngine writes for each phrase a test asks about."""


@pytest.fixture
def installed_runtime():
    from worker.jobs import WorkerRuntime, install_runtime

    def install(engine: Engine, masker=None) -> None:
        install_runtime(WorkerRuntime(engine=engine, masker=masker))

    previous = install_runtime(None)
    yield install
    install_runtime(previous)


def _chunk(tmp_path, *images: tuple[str, list[dict]]) -> dict:
    path = tmp_path / "photo.png"
    _image(200, 100).save(path)
    return {
        "images": [
            {
                "id": image_id,
                "image": str(path),
                "task_id": index,
                "calls": calls,
                "local_paths": True,
            }
            for index, (image_id, calls) in enumerate(images)
        ]
    }


CAT = {"task": "detection", "categories": ["cat"], "key": "animals"}
DOG = {"task": "pointing", "categories": ["dog"], "key": "dogs"}
SIGN = {"task": "detection", "categories": ["broken sign"], "key": "signs"}


def test_an_engine_error_on_one_call_keeps_the_other_calls(tmp_path, installed_runtime):
    from worker.jobs import run_chunk

    engine = PhraseEngine(PHRASE_ANSWERS, fail_on=("broken sign",))
    installed_runtime(engine)
    payload = _chunk(tmp_path, ("a", [CAT, SIGN, DOG]), ("b", [CAT]))
    a, b = (ImageResult.from_dict(x) for x in run_chunk(payload)["images"])

    assert [c.key for c in a.calls] == ["animals", "dogs"]
    (cat,) = a.calls[0].predictions
    assert cat.label == "cat" and cat.type is RegionType.BOX
    (dog,) = a.calls[1].predictions
    assert dog.label == "dog" and dog.type is RegionType.POINT
    # The failure names the call (key, task, categories), the image and why.
    assert "call 'signs' (detection: broken sign)" in a.error
    assert str(tmp_path / "photo.png") in a.error
    assert "engine rejected the prompt about 'broken sign'" in a.error
    assert b.error is None and [c.key for c in b.calls] == ["animals"]
    # One batch first; after it failed, each request alone.
    assert engine.batch_sizes == [4, 1, 1, 1, 1]


def test_an_engine_that_is_down_fails_every_call_without_retrying_them_all(
    tmp_path, installed_runtime
):
    from worker.jobs import run_chunk

    engine = PhraseEngine(PHRASE_ANSWERS, fail_on=("cat", "dog", "broken sign"))
    installed_runtime(engine)
    payload = _chunk(tmp_path, ("a", [CAT, SIGN, DOG]), ("b", [CAT]))
    a, b = (ImageResult.from_dict(x) for x in run_chunk(payload)["images"])
    assert a.calls == [] and b.calls == []
    assert "call 'animals' (detection: cat)" in a.error
    assert "call 'dogs' (pointing: dog)" in a.error
    assert "call 'animals' (detection: cat)" in b.error
    assert engine.batch_sizes == [4] + [1] * ENGINE_DOWN_AFTER


class FailingMasker:
    """A SAM stand-in that fails on every image (a broken checkpoint)."""

    def __call__(self, image, predictions, call):
        raise RuntimeError("SAM ran out of memory")


def test_a_failing_mask_step_keeps_the_calls_without_masks(tmp_path, installed_runtime):
    from worker.jobs import run_chunk

    installed_runtime(PhraseEngine(PHRASE_ANSWERS), masker=FailingMasker())
    masked_sign = {**SIGN, "masks": "rle"}
    payload = _chunk(tmp_path, ("a", [CAT, masked_sign]))
    (a,) = (ImageResult.from_dict(x) for x in run_chunk(payload)["images"])
    assert [c.key for c in a.calls] == ["animals"]
    assert a.calls[0].predictions[0].label == "cat"
    assert "call 'signs' (detection: broken sign)" in a.error
    assert "SAM ran out of memory" in a.error


class SizeRecordingEngine(PhraseEngine):
    """PhraseEngine that also records the size of every image it is given."""

    def __init__(self, answers: dict[str, str]):
        super().__init__(answers)
        self.image_sizes: list[tuple[int, int]] = []

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.image_sizes.extend(r.image.size for r in requests)
        return super().generate(requests)


def test_a_large_image_reaches_the_engine_at_model_size_in_original_pixels(tmp_path):
    """A 3000x2000 photo is decoded down to the model's input (not held whole);
    the job's size and the regions stay in the photo's own pixels."""
    from converters.geometry import smart_resize

    path = tmp_path / "large.png"
    _image(3000, 2000).save(path)
    engine = SizeRecordingEngine(PHRASE_ANSWERS)
    call = ModelCall(task="detection", categories=["cat"], key="animals")
    job = ImageJob(id="1", image=str(path), calls=[call], local_paths=True)
    (result,) = run_image_jobs(engine, [job])
    fit_h, fit_w = smart_resize(2000, 3000)
    assert engine.image_sizes == [(fit_w, fit_h)]
    assert (result.width, result.height) == (3000, 2000)
    (box,) = result.calls[0].predictions
    bins = (100, 100, 400, 400)  # PHRASE_ANSWERS["cat"]
    expected = [b / 999 * side for b, side in zip(bins, (3000, 2000) * 2, strict=True)]
    assert box.coords == pytest.approx(expected)
