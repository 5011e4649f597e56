"""Fine-tuning data from a project's own annotations (no torch here).

- :mod:`~backend.finetune.examples`: one annotation -> training examples in
  Rex-Omni's grammar, the prompt inference sends and the answer it should give
  (:func:`build_examples`, :class:`Example`);
- :mod:`~backend.finetune.regions`: a control's annotated regions as its call
  answers them; :mod:`~backend.finetune.clipping`: geometry kept in the image;
- :mod:`~backend.finetune.source`: Label Studio tasks -> examples, counting
  what is skipped (:func:`iter_examples`, :class:`ExampleStats`);
- :mod:`~backend.finetune.tsv`: upstream Rex-Omni's SFT files (images TSV,
  annotations TSV, line index), written as a stream;
  :mod:`~backend.finetune.export`: a project's detection examples into them.

``docs/finetune.md`` describes what becomes an example and the TSV format.
"""

from backend.finetune.examples import MAX_REFERENCE_BOXES, Example, build_examples
from backend.finetune.source import ExampleStats, annotated_images, iter_examples

__all__ = [
    "MAX_REFERENCE_BOXES",
    "Example",
    "ExampleStats",
    "annotated_images",
    "build_examples",
    "iter_examples",
]
