"""Load a task's image as Label Studio shows it: one RGB PIL image, EXIF applied.

Usage::

    from common.images.loader import load_image
    image = load_image("/data/upload/1/2ac9ba97-up.jpg", task_id=1)

Modules, each importable alone (this package re-exports nothing, so that
``common.settings`` can check ``REXLABEL_ALLOWED_HOSTS`` with ``hosts`` while
``loader`` reads settings):

- ``errors``: ``ImageLoadError`` and its kinds; every failure is one,
  naming the reference;
- ``decode``: bytes to an RGB image within a pixel limit, reduced to the
  model's size while decoding (``original_size`` keeps the full size for
  coordinates), and ``resize_for_model``;
- ``hosts``: the download host policy (``REXLABEL_ALLOWED_HOSTS``, the SSRF
  guard, public addresses);
- ``loader``: ``ImageLoader`` (references to bytes through
  ``common.labelstudio.media`` and ``auth``, downloads through the guard and a
  bounded LRU cache of the encoded bytes), ``load_image`` and the process-wide
  ``default_loader``.

References: local paths and ``file://`` URLs (command line only:
``local_paths=True``), http(s) URLs, Label Studio paths
(``/data/local-files/?d=`` read from LOCAL_FILES_DOCUMENT_ROOT when set) and
cloud URIs. Downloads reach only the Label Studio host or
``REXLABEL_ALLOWED_HOSTS`` (private and loopback addresses only when that host
is named).

Memory: files and downloads are capped in bytes before they are read; an
image is refused from its header above ``REXLABEL_MAX_IMAGE_PIXELS``, and with
``fit_pixels`` (the pipeline passes the model's ``max_pixels``) a larger one is
decoded straight down to the model's size, its full size kept as
``decode.original_size`` for coordinates.
"""
