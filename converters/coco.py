"""Canonical predictions <-> COCO JSON that keeps everything, readable by pycocotools.

Per prediction, one annotation (pixels of the original image, bbox ``[x, y, w, h]``):

* box: ``bbox`` and ``area`` (w * h); no ``segmentation`` unless it has a mask.
* mask (any prediction carrying one): ``segmentation`` is the compressed RLE
  (``counts`` as str) and ``area`` its pixel count. A polygon with a mask also
  keeps its vertices in ``"polygon"`` (flat list).
* polygon: ``segmentation`` ``[[x1, y1, x2, y2, ...]]``, ``bbox``, ``area`` by the
  shoelace formula.
* point: ``bbox`` ``[x, y, 0, 0]``, ``area`` 0 and ``"point": [x, y]`` (COCO has
  no point annotation; box IoU cannot match a zero-size box, so leave point
  categories out of ``COCOeval.params.catIds``).
* keypoint instance: ``keypoints`` ``[x, y, v, ...]`` in the category's joint
  order (v = 2 for a joint with coordinates, ``0, 0, 0`` for a missing one),
  ``num_keypoints``, ``bbox`` and ``area`` of the instance box, ``instance_id``.

Extra keys kept when set: ``score``, ``text`` (OCR), ``instance_id``.
Categories get 1-based ids in the order given; keypoint categories carry
``keypoints`` (joint names) and ``skeleton`` (1-based joint index pairs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from converters import masks
from converters.keypoint_sets import KeypointSet, guess_keypoint_set
from converters.prediction import Prediction, RegionType

VISIBLE = 2
"""COCO visibility flag of a joint with coordinates (labelled and visible)."""

MISSING = 0
"""COCO visibility flag of a joint without coordinates; x and y are then 0."""

DEFAULT_RESULT_SCORE = 1.0
"""Score written for predictions without one: loadRes and COCOeval need a score."""


class CocoError(ValueError):
    """Input cannot be written as, or read from, COCO; the message names the part."""


@dataclass
class CocoImage:
    """One image and its predictions.

    Attributes:
        file_name: the image path as the dataset refers to it.
        width, height: original image size in pixels (after EXIF transpose).
        predictions: canonical predictions, pixels of that image.
        id: the COCO image id; None numbers images 1, 2, ... skipping given ids.
    """

    file_name: str
    width: int
    height: int
    predictions: list[Prediction] = field(default_factory=list)
    id: int | None = None


@dataclass(frozen=True)
class CocoCategory:
    """A category; ``keypoints`` (joint names, in triplet order) and ``skeleton``
    (pairs of joint names) make it a keypoint category."""

    name: str
    keypoints: tuple[str, ...] | None = None
    skeleton: tuple[tuple[str, str], ...] = ()
    supercategory: str = ""

    @classmethod
    def from_keypoint_set(cls, kp_set: KeypointSet, name: str | None = None):
        return cls(name or kp_set.name, kp_set.joints, kp_set.skeleton)


CategoryLike = str | CocoCategory | KeypointSet
ImageLike = CocoImage | tuple[Mapping[str, Any], Iterable[Prediction]]


def _category(item: CategoryLike) -> CocoCategory:
    if isinstance(item, CocoCategory):
        return item
    if isinstance(item, KeypointSet):
        return CocoCategory.from_keypoint_set(item)
    if isinstance(item, str):
        return CocoCategory(item)
    raise CocoError(f"a category must be a name, CocoCategory or KeypointSet: {item!r}")


def _image(item: ImageLike, index: int) -> CocoImage:
    if isinstance(item, CocoImage):
        return item
    try:
        info, predictions = item
        return CocoImage(
            file_name=str(info["file_name"]),
            width=int(info["width"]),
            height=int(info["height"]),
            predictions=list(predictions),
            id=info.get("id"),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CocoError(
            f"image {index} must be a CocoImage or (info with file_name, width, "
            f"height[, id], predictions): {error!r}"
        ) from None


def _shoelace(points: Sequence[Sequence[float]]) -> float:
    total = 0.0
    for (x0, y0), (x1, y1) in zip(points, [*points[1:], points[0]], strict=True):
        total += x0 * y1 - x1 * y0
    return abs(total) / 2.0


def _xywh(box: Sequence[float]) -> list[float]:
    x0, y0, x1, y1 = box
    return [x0, y0, x1 - x0, y1 - y0]


class _Categories:
    """Category ids and joint lists, growing as keypoint instances fix them."""

    def __init__(self, categories: Iterable[CategoryLike], add_unknown: bool) -> None:
        self.items: list[CocoCategory] = []
        self.ids: dict[str, int] = {}
        self.joints: dict[str, tuple[str, ...]] = {}
        self.add_unknown = add_unknown
        for item in categories:
            self.add(_category(item))

    def add(self, category: CocoCategory) -> int:
        if category.name in self.ids:
            raise CocoError(f"category {category.name!r} is listed twice")
        self.items.append(category)
        self.ids[category.name] = len(self.items)
        if category.keypoints is not None:
            self.joints[category.name] = tuple(category.keypoints)
        return len(self.items)

    def id_of(self, label: str, where: str) -> int:
        try:
            return self.ids[label]
        except KeyError:
            if self.add_unknown:
                return self.add(CocoCategory(label))
            known = ", ".join(repr(n) for n in self.ids) or "none"
            raise CocoError(
                f"label {label!r} of {where} is not a category (categories: {known}); "
                "map it first or pass add_unknown=True"
            ) from None

    def joints_of(self, p: Prediction, where: str) -> tuple[str, ...] | None:
        """The joints of ``p``'s category, fixed by its first instance that
        names any; None while none has (``p`` names none either)."""
        names = list(p.keypoints or {})
        joints = self.joints.get(p.label)
        if joints is None and not names:
            return None
        if joints is None:  # fixed by the first instance of the category
            kp_set = guess_keypoint_set(names)
            if kp_set is not None and set(names) <= set(kp_set.joints):
                joints, skeleton = kp_set.joints, kp_set.skeleton
            else:
                joints, skeleton = tuple(names), ()
            index = self.ids[p.label] - 1
            old = self.items[index]
            self.items[index] = CocoCategory(
                old.name, joints, skeleton, old.supercategory
            )
            self.joints[p.label] = joints
        unknown = [n for n in names if n not in joints]
        if unknown:
            raise CocoError(
                f"keypoint instance of {where} has joints {unknown} that category "
                f"{p.label!r} does not list ({', '.join(joints)})"
            )
        return joints

    def to_json(self) -> list[dict[str, Any]]:
        out = []
        for i, c in enumerate(self.items, start=1):
            entry: dict[str, Any] = {
                "id": i,
                "name": c.name,
                "supercategory": c.supercategory,
            }
            if c.keypoints is not None:
                index = {joint: k for k, joint in enumerate(c.keypoints, start=1)}
                entry["keypoints"] = list(c.keypoints)
                entry["skeleton"] = [[index[a], index[b]] for a, b in c.skeleton]
            out.append(entry)
        return out


def _outline(p: Prediction, bbox: Sequence[float]) -> list[float]:
    """A polygon for an annotation without one, so ``COCOeval(iouType="segm")``
    and ``annToMask`` read every annotation: a point as a degenerate triangle,
    anything else as its box's corners in the order ``COCO.loadRes`` writes
    them (left-top, left-bottom, right-bottom, right-top)."""
    if p.type is RegionType.POINT:
        x, y = p.coords
        return [x, y, x, y, x, y]
    x0, y0, w, h = bbox
    x1, y1 = x0 + w, y0 + h
    return [x0, y0, x0, y1, x1, y1, x1, y0]


def _is_box_outline(flat: Sequence[float], bbox: Sequence[float] | None) -> bool:
    """Whether a single polygon is :func:`_outline` of ``bbox`` (a box)."""
    if bbox is None or len(flat) != 8:
        return False
    x0, y0, w, h = bbox
    x1, y1 = x0 + w, y0 + h
    return list(flat) == [x0, y0, x0, y1, x1, y1, x1, y0]


def fill_keypoints(
    annotations: list[dict[str, Any]], categories: list[dict[str, Any]]
) -> None:
    """Make every annotation of a category with ``keypoints`` carry ``keypoints``
    (3 x K numbers) and ``num_keypoints`` -- 0 for a box without joints, or an
    instance seen before its category's joints were known -- as
    ``COCOeval(iouType="keypoints")`` reads both from every annotation."""
    joints = {c["id"]: len(c["keypoints"]) for c in categories if "keypoints" in c}
    for ann in annotations:
        k = joints.get(ann["category_id"])
        if k is None or "keypoints" in ann:
            continue
        ann["keypoints"] = [0.0, 0.0, MISSING] * k
        ann["num_keypoints"] = 0


def _annotation(
    p: Prediction, image: CocoImage, categories: _Categories, where: str
) -> dict[str, Any]:
    ann: dict[str, Any] = {"category_id": categories.id_of(p.label, where)}
    kind = p.type
    if kind is RegionType.POINT:
        x, y = p.coords
        ann.update(bbox=[x, y, 0.0, 0.0], area=0.0, point=[x, y])
    elif kind is RegionType.POLYGON:
        ann["bbox"] = _xywh(p.bbox)
        flat = [v for point in p.coords for v in point]
        if p.mask is None:
            ann["segmentation"] = [flat]
            ann["area"] = _shoelace(p.coords)
        else:
            ann["polygon"] = flat
    elif kind is RegionType.KEYPOINT:
        joints = categories.joints_of(p, where)
        ann["bbox"] = _xywh(p.coords)
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
        if joints is not None:  # else filled in once the category's joints are known
            triplets: list[float] = []
            for joint in joints:
                xy = (p.keypoints or {}).get(joint)
                triplets.extend((0.0, 0.0, MISSING) if xy is None else (*xy, VISIBLE))
            ann["keypoints"] = triplets
            ann["num_keypoints"] = sum(v != MISSING for v in triplets[2::3])
    else:
        ann["bbox"] = _xywh(p.coords)
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    if "segmentation" not in ann and p.mask is None:
        ann["segmentation"] = [_outline(p, ann["bbox"])]
    if p.mask is not None:
        if list(p.mask["size"]) != [image.height, image.width]:
            raise CocoError(
                f"mask of {where} is {p.mask['size']} (h, w) but the image is "
                f"[{image.height}, {image.width}]"
            )
        ann["segmentation"] = dict(p.mask)
        ann["area"] = float(masks.rle_area(p.mask))
    ann["iscrowd"] = 0
    if p.score is not None:
        ann["score"] = p.score
    if p.text is not None:
        ann["text"] = p.text
    if p.instance_id is not None:
        ann["instance_id"] = p.instance_id
    return ann


def to_coco(
    images: Iterable[ImageLike],
    categories: Iterable[CategoryLike],
    *,
    add_unknown: bool = False,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A COCO dataset (``images``, ``annotations``, ``categories``) for pycocotools.

    Args:
        images: :class:`CocoImage` items, or ``(info, predictions)`` pairs with
            ``info`` holding ``file_name``, ``width``, ``height`` and optionally ``id``.
        categories: names, :class:`CocoCategory` or
            :class:`~converters.keypoint_sets.KeypointSet` items; ids are 1-based
            in this order. A plain name whose predictions are keypoint instances
            takes the joints (and skeleton) of the keypoint set that covers the
            first instance's joints, else that instance's joint order.
        add_unknown: append labels that are not categories (in order of first
            appearance) instead of raising :class:`CocoError`.
        info: the optional ``info`` block.
    """
    cats = _Categories(categories, add_unknown)
    items = [_image(item, i) for i, item in enumerate(images)]
    used: set[int] = set()
    for image in items:
        if image.id is not None:
            if image.id in used:
                raise CocoError(f"image id {image.id} is used twice")
            used.add(int(image.id))
    next_id = 1
    images_json: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image in items:
        image_id = image.id
        if image_id is None:
            while next_id in used:
                next_id += 1
            image_id = next_id
            used.add(image_id)
        images_json.append(
            {
                "id": int(image_id),
                "file_name": image.file_name,
                "width": int(image.width),
                "height": int(image.height),
            }
        )
        for n, p in enumerate(image.predictions):
            where = f"prediction {n} of image {image.file_name!r}"
            ann = _annotation(p, image, cats, where)
            ann["id"] = len(annotations) + 1
            ann["image_id"] = int(image_id)
            annotations.append(ann)
    categories_json = cats.to_json()
    fill_keypoints(annotations, categories_json)
    dataset: dict[str, Any] = {
        "images": images_json,
        "annotations": annotations,
        "categories": categories_json,
    }
    if info is not None:
        dataset = {"info": dict(info), **dataset}
    return dataset


_RESULT_KEYS = ("image_id", "category_id", "bbox", "segmentation", "keypoints")


def to_coco_results(
    dataset: Mapping[str, Any], iou_type: str | None = None
) -> list[dict[str, Any]]:
    """The results-list form (``COCO.loadRes``) of a :func:`to_coco` dataset.

    Each annotation keeps ``image_id``, ``category_id``, ``bbox`` and, when
    present, ``segmentation`` and ``keypoints``; ``score`` is the prediction's
    or :data:`DEFAULT_RESULT_SCORE`. With ``iou_type="keypoints"``, annotations
    without a visible joint are left out: they say nothing about keypoints
    (COCOeval ignores such ground truth too), and their all-zero joints would
    count as a wrong detection at the image's corner.
    """
    results = []
    for ann in dataset["annotations"]:
        if iou_type == "keypoints" and not ann.get("num_keypoints"):
            continue
        result = {key: ann[key] for key in _RESULT_KEYS if key in ann}
        result["score"] = ann.get("score", DEFAULT_RESULT_SCORE)
        results.append(result)
    return results


def _prediction(
    ann: Mapping[str, Any], category: Mapping[str, Any], image: Mapping[str, Any]
) -> Prediction:
    label = category["name"]
    extra = {
        "score": ann.get("score"),
        "text": ann.get("text"),
        "instance_id": ann.get("instance_id"),
    }
    x, y, w, h = ann["bbox"] if "bbox" in ann else (0.0, 0.0, 0.0, 0.0)
    box = (x, y, x + w, y + h)
    values = ann.get("keypoints") or []
    if category.get("keypoints") and any(v != MISSING for v in values[2::3]):
        joints = {
            joint: None
            if values[3 * k + 2] == MISSING
            else (values[3 * k], values[3 * k + 1])
            for k, joint in enumerate(category["keypoints"])
        }
        return Prediction(
            type=RegionType.KEYPOINT, label=label, coords=box, keypoints=joints, **extra
        )
    if "point" in ann:
        return Prediction(
            type=RegionType.POINT, label=label, coords=ann["point"], **extra
        )
    segmentation = ann.get("segmentation")
    if (
        isinstance(segmentation, list)
        and len(segmentation) == 1
        and _is_box_outline(segmentation[0], ann.get("bbox"))
    ):
        segmentation = None  # a box written with its outline (to_coco)
    if isinstance(segmentation, list) and len(segmentation) == 1:
        flat = segmentation[0]
        points = list(zip(flat[0::2], flat[1::2], strict=True))
        return Prediction(type=RegionType.POLYGON, label=label, coords=points, **extra)
    mask = None
    if isinstance(segmentation, Mapping):
        mask = masks.mask_to_rle(masks.rle_to_mask(segmentation))
    elif isinstance(segmentation, list) and segmentation:  # several polygons
        height, width = int(image["height"]), int(image["width"])
        mask = masks.mask_to_rle(
            sum(
                masks.polygon_to_mask(
                    list(zip(f[0::2], f[1::2], strict=True)), width, height
                )
                for f in segmentation
            )
        )
    if mask is not None and "bbox" not in ann:
        box = masks.rle_bbox(mask)
    if "polygon" in ann:
        flat = ann["polygon"]
        points = list(zip(flat[0::2], flat[1::2], strict=True))
        return Prediction(
            type=RegionType.POLYGON, label=label, coords=points, mask=mask, **extra
        )
    if "bbox" not in ann and mask is None:
        raise CocoError("annotation has neither bbox nor segmentation")
    return Prediction(type=RegionType.BOX, label=label, coords=box, mask=mask, **extra)


def from_coco(dataset: Mapping[str, Any]) -> list[CocoImage]:
    """Canonical predictions per image from a COCO dataset (or a :func:`to_coco` one).

    Keypoint annotations with a visible joint become keypoint instances (joints
    with v = 0 are None; one with no joint visible reads back as its box), a
    single polygon that is its bbox's outline (as :func:`to_coco` writes boxes) a box,
    ``point`` annotations points, a single-polygon segmentation a polygon, an RLE
    or a multi-polygon segmentation a box (the annotation's bbox) with the mask
    as COCO RLE, anything else a box. Images keep their order and ids.
    """
    try:
        categories = {c["id"]: c for c in dataset["categories"]}
        images = {
            img["id"]: CocoImage(
                img["file_name"], img["width"], img["height"], [], img["id"]
            )
            for img in dataset["images"]
        }
        raw = {img["id"]: img for img in dataset["images"]}
    except (KeyError, TypeError) as error:
        raise CocoError(f"not a COCO dataset: missing {error}") from None
    for n, ann in enumerate(dataset.get("annotations", [])):
        where = f"annotation {ann.get('id', n)!r}"
        image = images.get(ann.get("image_id"))
        category = categories.get(ann.get("category_id"))
        if image is None or category is None:
            raise CocoError(
                f"{where} refers to image {ann.get('image_id')!r} / category "
                f"{ann.get('category_id')!r}, which the dataset lacks"
            )
        try:
            prediction = _prediction(ann, category, raw[image.id])
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise CocoError(f"{where}: {error}") from None
        image.predictions.append(prediction)
    return list(images.values())
