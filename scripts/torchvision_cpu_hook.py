"""Make the PyPI (CUDA) torchvision importable next to a CPU-only torch.

Installed into the ``.venv-vllm`` site-packages by ``scripts/setup-vllm-venv.sh``
and loaded at interpreter start by a one-line ``.pth`` file. Touches no package
file. Two parts:

1. Just before ``torchvision`` is first imported, define the schemas of the ops
   that ``torchvision/_meta_registrations.py`` registers fakes for (``nms``,
   ``qnms``), without kernels, so that import does not fail with
   ``operator torchvision::nms does not exist``.
2. After the import, if torchvision's C++ image extension did not load, replace
   ``torchvision.io.decode_image`` with a PIL decoder returning a CHW uint8
   tensor (``transformers serve`` decodes request images through it).

The C++ ops (nms, roi_align) stay unavailable; none of rexlabel's paths uses them.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

_OP_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
"""The ops whose missing schemas break ``import torchvision`` on a CPU torch."""

_KEEP_ALIVE: list[object] = []
"""The torch.library.Library object must outlive the import, or the schemas go."""


def _define_op_schemas() -> None:
    import torch

    library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _OP_SCHEMAS:
        try:
            library.define(schema)
        except RuntimeError as exc:  # already defined by a working extension
            if "already" not in str(exc).lower():
                raise
    _KEEP_ALIVE.append(library)


def _pil_decode_image(input, mode=None, apply_exif_orientation=False):  # noqa: A002
    """``torchvision.io.decode_image`` stand-in: bytes tensor -> CHW uint8 tensor."""
    import io

    import numpy as np
    import torch
    from PIL import Image, ImageOps

    if isinstance(input, str):
        with open(input, "rb") as handle:
            data = handle.read()
    else:
        data = input.numpy().tobytes()
    image = Image.open(io.BytesIO(data))
    if apply_exif_orientation:
        image = ImageOps.exif_transpose(image)
    mode_name = str(getattr(mode, "name", mode or "UNCHANGED")).upper()
    pil_mode = {"GRAY": "L", "GRAY_ALPHA": "LA", "RGB": "RGB", "RGB_ALPHA": "RGBA"}
    if mode_name in pil_mode:
        image = image.convert(pil_mode[mode_name])
    elif image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGB")
    array = np.array(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _patch_decoders(torchvision) -> None:
    try:
        from torchvision.io import image as tv_image
    except Exception:  # pragma: no cover - torchvision without io
        return
    has_ops = getattr(tv_image, "_has_image_ops", None)
    if callable(has_ops) and has_ops():
        return
    tv_image.decode_image = _pil_decode_image
    torchvision.io.decode_image = _pil_decode_image


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader, finder):
        self._loader = loader
        self._finder = finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        _define_op_schemas()
        self._loader.exec_module(module)
        _patch_decoders(module)


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    """Wraps torchvision's loader. Stays on ``sys.meta_path`` until torchvision
    really executes: ``importlib.util.find_spec("torchvision")`` (availability
    checks in transformers and vLLM) asks finders without importing."""

    def __init__(self):
        self._busy = False

    def find_spec(self, fullname, path, target=None):
        if fullname != "torchvision" or self._busy:
            return None
        self._busy = True
        try:
            spec = importlib.util.find_spec("torchvision")
        finally:
            self._busy = False
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _PatchingLoader(spec.loader, self)
        return spec


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if "torchvision" in sys.modules:
        return
    if not any(isinstance(f, _TorchvisionFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionFinder())


install()
