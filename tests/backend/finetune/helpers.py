"""Label Studio results drawn in pixels, and the checks the fine-tuning tests share."""

from __future__ import annotations

from converters import masks
from converters.geometry import bin_to_pixel, pixel_to_bin

W, H = 400, 200
"""The image the results are drawn on (pixels, as Label Studio shows it)."""


def _size(width: int = W, height: int = H) -> dict:
    return {"original_width": width, "original_height": height, "image_rotation": 0}


def rect(rid, x0, y0, x1, y1, label=None, *, name="label", rotation=0, **size):
    """A rectangle result from pixel corners (``label`` None: a plain Rectangle)."""
    width, height = size.get("width", W), size.get("height", H)
    value = {
        "x": 100 * x0 / width,
        "y": 100 * y0 / height,
        "width": 100 * (x1 - x0) / width,
        "height": 100 * (y1 - y0) / height,
        "rotation": rotation,
    }
    kind = "rectangle"
    if label is not None:
        value["rectanglelabels"] = [label]
        kind = "rectanglelabels"
    return {
        "id": rid,
        "from_name": name,
        "to_name": "image",
        "type": kind,
        "value": value,
        **_size(width, height),
    }


def polygon(rid, points, label=None, *, name="poly"):
    value = {"points": [[100 * x / W, 100 * y / H] for x, y in points]}
    kind = "polygon"
    if label is not None:
        value["polygonlabels"] = [label]
        kind = "polygonlabels"
    return {
        "id": rid,
        "from_name": name,
        "to_name": "image",
        "type": kind,
        "value": value,
        **_size(),
    }


def brush(rid, mask, label, *, name="brush"):
    """A brush result painting ``mask`` (H x W, 0/1)."""
    return {
        "id": rid,
        "from_name": name,
        "to_name": "image",
        "type": "brushlabels",
        "value": {
            "format": "rle",
            "rle": masks.mask_to_brush_rle(mask * 255),
            "brushlabels": [label],
        },
        **_size(),
    }


def point(rid, x, y, label, *, name="kp", parent=None):
    result = {
        "id": rid,
        "from_name": name,
        "to_name": "image",
        "type": "keypointlabels",
        "value": {
            "x": 100 * x / W,
            "y": 100 * y / H,
            "width": 0.5,
            "keypointlabels": [label],
        },
        **_size(),
    }
    if parent is not None:
        result["parentID"] = parent
    return result


def text(region: dict, words: str, *, name="transcription") -> dict:
    """The per-region TextArea result of ``region`` (same id and geometry)."""
    value = {k: v for k, v in region["value"].items() if not k.endswith("labels")}
    return {
        **region,
        "from_name": name,
        "type": "textarea",
        "value": {**value, "text": [words]},
    }


def one_bin(size: float) -> float:
    """The most a coordinate moves through bins and back: one bin, plus float noise."""
    return size / 999 + 1e-6


def through_bins(value: float, size: float) -> float:
    """Where ``value`` pixels land after the answer's bin and the parser's pixels."""
    return bin_to_pixel(pixel_to_bin(value, size), size)


def close_box(got, want, width=W, height=H) -> bool:
    """Boxes equal within one bin on each side."""
    return all(
        abs(g - w) <= one_bin(width if i % 2 == 0 else height)
        for i, (g, w) in enumerate(zip(got, want, strict=True))
    )


def close_point(got, want, width=W, height=H) -> bool:
    return abs(got[0] - want[0]) <= one_bin(width) and abs(got[1] - want[1]) <= one_bin(
        height
    )
