"""Canonical predictions <-> Label Studio result dicts.

Label Studio coordinates are percent (0..100) of the original image after EXIF
transpose; ``x``/``y`` are the top-left corner and ``rotation`` is degrees
clockwise about ``(x, y)``. All results that describe one region share an
``id``. Result types come from the tag table, :mod:`converters.tags`.

* :mod:`converters.labelstudio.writer`: ``to_labelstudio`` (the results of one
  control tag for one image) and ``to_labelstudio_prediction`` (one task's
  prediction);
* :mod:`converters.labelstudio.reader`: ``from_labelstudio``, annotation or
  prediction results back into canonical predictions;
* :mod:`converters.labelstudio.base`: what both share.
"""
