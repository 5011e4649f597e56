"""Metrics for ``rexlabel evaluate`` (issue 13): predictions against annotations.

Pure functions over :class:`converters.prediction.Prediction` (pixels of the
original image), one job per module: ``pairs`` (an image's two sides),
``matching`` (true/false positives, misses, the confusion matrix), ``coco_ap``
(pycocotools' COCOeval), ``thresholds`` (precision, recall and F1 per score
threshold), ``points``, ``ocr``, ``effort``, ``keypoints`` (PCK@0.1 and
per-joint accuracy) and ``masks`` (mean IoU of matched masks and polygons).
No torch, no Flask; reading Label Studio and writing reports live elsewhere.
"""
