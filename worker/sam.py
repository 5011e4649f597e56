"""SAM masks for Rex-Omni's boxes and for clicked points (segment-anything).

Usage::

    masker = load_masker("sam_vit_h_4b8939.pth")  # checkpoint, type from its name
    predictions = masker(image, predictions, call)  # masks on the boxes of a call
    region = masker.point_mask(image, [[120, 80, 1], [40, 40, 0]])

Boxes of one image are embedded once (``SamPredictor.set_image``) and decoded
in one batched ``predict_torch`` call (split only when the masks of a very
large image would not fit in memory). Masks come back at the original image
size as COCO compressed RLE on :attr:`Prediction.mask`; ``masks="polygon"``
turns each into a polygon prediction. torch and segment_anything are imported
inside functions so the backend can import this module's names.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common.images.decode import original_size
from common.jobspec import MaskOutput
from converters.masks import mask_to_polygon, mask_to_rle, rle_bbox
from converters.prediction import Prediction, RegionType
from worker.engines.transformers_loading import resolve_device

log = logging.getLogger(__name__)

SAM_MODEL_TYPES = ("vit_h", "vit_l", "vit_b")
"""segment-anything's model sizes; the checkpoint must match the type."""
MAX_MASK_PIXELS_PER_CALL = 200_000_000
"""Boxes decoded per ``predict_torch`` call are capped so their float32 mask
logits at the original size stay under ~0.8 GB (16 boxes of a 12 MP photo;
every box of a 1 MP image in one call)."""
SINGLE_POINT_MULTIMASK = True
"""One click is ambiguous (part or whole): ask SAM for 3 masks and keep the one
it scores best, as SAM's authors advise; several clicks ask for one mask."""
TEST_SAM_IMAGE_SIZE = 256
"""Input size of the tiny random SAM built for tests (the real SAM uses 1024)."""


class MaskingUnavailable(RuntimeError):
    """Masks were asked for but SAM is not configured or cannot be loaded."""


class MaskPromptError(ValueError):
    """Point or box prompts are malformed; the message names the bad one."""


def model_type_from_checkpoint(path: str | Path) -> str | None:
    """``vit_h``/``vit_l``/``vit_b`` from a checkpoint file name, else None.

    Official names: ``sam_vit_h_4b8939.pth``, ``sam_vit_l_0b3195.pth``,
    ``sam_vit_b_01ec64.pth``.
    """
    match = re.search(r"vit_([hlb])(?![a-z])", Path(path).name.lower())
    return f"vit_{match.group(1)}" if match else None


def build_sam(checkpoint: str | Path, model_type: str | None = None) -> Any:
    """A segment-anything ``Sam`` with weights from a local ``checkpoint``.

    Raises:
        MaskingUnavailable: missing file, unknown type, or weights of another type.
    """
    import torch
    from segment_anything import sam_model_registry

    path = Path(checkpoint)
    if not path.is_file():
        raise MaskingUnavailable(f"SAM_CHECKPOINT {str(path)!r} is not a file")
    kind = model_type or model_type_from_checkpoint(path)
    if kind is None:
        raise MaskingUnavailable(
            f"cannot tell the SAM model type from {path.name!r}: set SAM_MODEL_TYPE "
            f"to one of {', '.join(SAM_MODEL_TYPES)}"
        )
    if kind not in SAM_MODEL_TYPES:
        raise MaskingUnavailable(
            f"SAM_MODEL_TYPE {kind!r} is not one of {', '.join(SAM_MODEL_TYPES)}"
        )
    sam = sam_model_registry[kind](checkpoint=None)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        sam.load_state_dict(state)
    except RuntimeError as exc:
        raise MaskingUnavailable(
            f"SAM_CHECKPOINT {path.name!r} does not hold {kind} weights "
            f"(set SAM_MODEL_TYPE to match): {str(exc).splitlines()[0]}"
        ) from None
    except Exception as exc:  # pickle errors, truncated files
        raise MaskingUnavailable(
            f"SAM_CHECKPOINT {path.name!r} could not be read: {exc}"
        ) from None
    return sam


def build_test_sam(seed: int = 0, image_size: int = TEST_SAM_IMAGE_SIZE) -> Any:
    """A tiny SAM with random weights (segment_anything's own classes), for tests.

    Same code path as the real model under ``SamPredictor`` (about 10 ms per
    image on a CPU); the masks mean nothing.
    """
    from functools import partial

    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(seed)
    patch, prompt_dim = 16, 32
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=2,
            embed_dim=64,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=2,
            patch_size=patch,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=[1],
            window_size=4,
            out_chans=prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(image_size // patch, image_size // patch),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2
            ),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=64,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def _clamp_score(value: float) -> float:
    """SAM's predicted IoU as a 0..1 score (it can stray outside that range)."""
    return float(min(1.0, max(0.0, value))) if math.isfinite(value) else 0.0


def _box_polygon(box: Sequence[float]) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = box
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


class SamMasker:
    """Box and point prompts -> masks, with one SAM model kept loaded.

    Args:
        sam: a segment_anything ``Sam`` (any size); moved to ``device``.
        device: ``cuda``, ``cpu`` or ``auto``.

    Thread-safe: one lock around the predictor (it holds the image embedding).
    ``embeddings`` counts image encoder runs (the last image is remembered, so
    repeated clicks on one image embed it once).
    """

    def __init__(self, sam: Any, *, device: str | None = "auto") -> None:
        from segment_anything import SamPredictor

        self.device = resolve_device(device)
        self.sam = sam.to(self.device).eval()
        self.predictor = SamPredictor(self.sam)
        self._lock = threading.Lock()
        self._image_key: bytes | None = None
        self.embeddings = 0

    # Prompts -> masks -------------------------------------------------------
    def _set_image(self, image: Image.Image) -> tuple[int, int]:
        """Embed ``image`` unless it is the one embedded last; returns (H, W)
        of its original size (``common.images.decode.original_size``: an image decoded
        down for the model still gets prompts and masks in full-size pixels;
        SAM embeds at 1024 px a side, less than any such reduced image)."""
        width, height = original_size(image)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        array = np.asarray(rgb)
        key = hashlib.blake2b(array.tobytes(), digest_size=16).digest()
        key += repr((array.shape, height, width)).encode()
        if key != self._image_key:
            self._embed(array, (height, width))
            self._image_key = key
            self.embeddings += 1
        return height, width

    def _embed(self, array: np.ndarray, original: tuple[int, int]) -> None:
        """``SamPredictor.set_image`` for an ``(h, w, 3)`` RGB array that stands
        for an image of ``original`` (H, W): prompts are read and masks
        returned at ``original``."""
        import torch

        if self.predictor.model.image_format != "RGB":
            array = array[..., ::-1]
        resized = self.predictor.transform.apply_image(array)
        tensor = torch.as_tensor(resized, device=self.predictor.device)
        tensor = tensor.permute(2, 0, 1).contiguous()[None, :, :, :]
        self.predictor.set_torch_image(tensor, original)

    def box_masks(
        self, image: Image.Image, boxes: Sequence[Sequence[float]]
    ) -> tuple[list[np.ndarray], list[float]]:
        """One ``(H, W)`` bool mask and SAM score per xyxy pixel box, in order."""
        import torch

        checked = []
        for i, box in enumerate(boxes):
            values = [float(v) for v in box]
            if len(values) != 4 or not all(math.isfinite(v) for v in values):
                raise MaskPromptError(f"box {i} must be 4 finite numbers, got {box!r}")
            checked.append(values)
        if not checked:
            return [], []
        masks: list[np.ndarray] = []
        scores: list[float] = []
        with self._lock:
            height, width = self._set_image(image)
            per_call = max(1, MAX_MASK_PIXELS_PER_CALL // (height * width))
            for start in range(0, len(checked), per_call):
                batch = torch.tensor(
                    checked[start : start + per_call],
                    dtype=torch.float32,
                    device=self.device,
                )
                prompt = self.predictor.transform.apply_boxes_torch(
                    batch, (height, width)
                )
                out, iou, _ = self.predictor.predict_torch(
                    point_coords=None,
                    point_labels=None,
                    boxes=prompt,
                    multimask_output=False,
                )
                masks.extend(m for m in out[:, 0].cpu().numpy())
                scores.extend(_clamp_score(s) for s in iou[:, 0].tolist())
        return masks, scores

    def points_mask(
        self, image: Image.Image, points: Sequence[Sequence[float]]
    ) -> tuple[np.ndarray, float]:
        """One ``(H, W)`` bool mask for ``[x, y, positive]`` pixel clicks."""
        coords, labels = [], []
        for i, point in enumerate(points or []):
            if not isinstance(point, Sequence) or len(point) != 3:
                raise MaskPromptError(
                    f"point {i} must be [x, y, positive], got {point!r}"
                )
            x, y, positive = (float(v) for v in point)
            if not (math.isfinite(x) and math.isfinite(y)) or positive not in (0, 1):
                raise MaskPromptError(
                    f"point {i} must be finite x, y and positive 0/1, got {point!r}"
                )
            coords.append([x, y])
            labels.append(int(positive))
        if not coords:
            raise MaskPromptError("a point-prompted mask needs at least one point")
        if not any(labels):
            raise MaskPromptError("a point-prompted mask needs a positive point")
        multimask = SINGLE_POINT_MULTIMASK and len(coords) == 1
        with self._lock:
            self._set_image(image)
            out, iou, _ = self.predictor.predict(
                point_coords=np.array(coords, dtype=np.float32),
                point_labels=np.array(labels, dtype=np.int64),
                multimask_output=multimask,
            )
        best = int(np.argmax(iou))
        return out[best].astype(bool), _clamp_score(float(iou[best]))

    # Pipeline interface -------------------------------------------------------
    def __call__(
        self, image: Image.Image, predictions: list[Prediction], call: Any
    ) -> list[Prediction]:
        """Masks on the box predictions of ``call`` (``call.masks`` != ``none``).

        ``rle``/``brush`` keep each box and set its COCO RLE ``mask``;
        ``polygon`` replaces each box by a polygon prediction of its mask (the
        box's corners when the mask is empty), mask kept. Other predictions pass
        through unchanged, in order.
        """
        output = MaskOutput(getattr(call, "masks", MaskOutput.NONE))
        if output is MaskOutput.NONE:
            return predictions
        indices = [i for i, p in enumerate(predictions) if p.type is RegionType.BOX]
        masks, _ = self.box_masks(image, [predictions[i].coords for i in indices])
        result = list(predictions)
        for index, mask in zip(indices, masks, strict=True):
            result[index] = self._with_mask(predictions[index], mask, output)
        return result

    def point_mask(
        self,
        image: Image.Image,
        points: Sequence[Sequence[float]],
        *,
        label: str = "",
        output: MaskOutput = MaskOutput.RLE,
    ) -> Prediction:
        """The region ``[x, y, positive]`` clicks select, as one prediction.

        A box (the mask's bounding box, pixels) with the COCO RLE mask, or a
        polygon when ``output`` is ``polygon``; score is SAM's predicted IoU.
        """
        mask, score = self.points_mask(image, points)
        rle = mask_to_rle(mask)
        box = Prediction(
            type=RegionType.BOX, label=label, coords=rle_bbox(rle), score=score
        )
        return self._with_mask(box, mask, output, rle=rle)

    @staticmethod
    def _with_mask(
        prediction: Prediction,
        mask: np.ndarray,
        output: MaskOutput,
        rle: Mapping[str, Any] | None = None,
    ) -> Prediction:
        rle = dict(rle) if rle is not None else mask_to_rle(mask)
        if MaskOutput(output) is not MaskOutput.POLYGON:
            return prediction.with_(mask=rle)
        polygon = mask_to_polygon(mask) or _box_polygon(prediction.coords)
        return prediction.with_(type=RegionType.POLYGON, coords=polygon, mask=rle)


def load_masker(
    checkpoint: str, model_type: str | None = None, *, device: str | None = "auto"
) -> SamMasker:
    """A :class:`SamMasker` with the weights of ``checkpoint`` (SAM_CHECKPOINT
    through the worker's runtime loader), of ``model_type`` (SAM_MODEL_TYPE;
    None: read from the file name), on ``device`` (REXLABEL_DEVICE).

    Raises:
        MaskingUnavailable: no checkpoint given, or it cannot be loaded.
    """
    if not checkpoint:
        raise MaskingUnavailable(
            "masks were requested but SAM is not configured: set SAM_CHECKPOINT to "
            "a segment-anything checkpoint (e.g. sam_vit_h_4b8939.pth)"
        )
    sam = build_sam(checkpoint, model_type)
    log.info("SAM %s loaded from %s", model_type or "(from name)", checkpoint)
    return SamMasker(sam, device=device)
