"""Rex-Omni's output grammar: its special tokens and coordinate bins, defined once.

Every part of rexlabel that reads or writes model text takes these from here:
the parser and the answer writer (``converters``), the runaway guards and the
engines' stop tokens (``worker.engines``), the trainer and the tiny test model
(``worker.training``). ``docs/rex-omni-output.md`` describes the grammar.
"""

from __future__ import annotations

OBJECT_REF_START = "<|object_ref_start|>"
"""Opens a phrase (a category, a text line, a GUI element's description)."""
OBJECT_REF_END = "<|object_ref_end|>"
"""Closes a phrase."""
BOX_START = "<|box_start|>"
"""Opens the coordinates of one phrase: items separated by ``,``."""
BOX_END = "<|box_end|>"
"""Closes the coordinates of one phrase."""
IM_END = "<|im_end|>"
"""Ends the assistant's turn: every engine stops generating at it."""
END_OF_TEXT = "<|endoftext|>"
"""Qwen's end of document, also its padding token."""
END_TOKENS = (IM_END, END_OF_TEXT)
"""Text after the first of these is not part of the answer."""
GRAMMAR_TOKENS = (OBJECT_REF_START, OBJECT_REF_END, BOX_START, BOX_END, *END_TOKENS)
"""Special tokens that cannot appear inside a phrase Rex-Omni writes."""

NONE_ANSWER = "None"
"""What stands between ``BOX_START`` and ``BOX_END`` for a category that was
asked for and is absent from the image."""

JSON_FENCE = "```json"
"""Opens the fenced block that holds the keypoint task's JSON answer."""
FENCE = "```"
"""Closes a fenced block."""
UNVISIBLE = "unvisible"
"""The keypoint answer's (misspelt, as trained) value for a joint that is not
visible."""

MAX_BIN = 999
"""The last coordinate token. Bins are divided by 999, not 1000, so 999 maps to
the image's full width or height."""
NUM_BINS = MAX_BIN + 1
"""Coordinate tokens ``<0>`` .. ``<999>``."""
KEYPOINT_BOX_BINS = 4
"""Outside a ``BOX_START`` span (the keypoint JSON answer) a run of this many
bins is an instance's box; the 2-bin runs are its joints."""


def bin_token(value: int) -> str:
    """The coordinate token of bin ``value`` (0..999): ``<17>``."""
    if not 0 <= value <= MAX_BIN:
        raise ValueError(f"bin {value} is outside 0..{MAX_BIN}")
    return f"<{value}>"


BIN_TOKENS = tuple(f"<{value}>" for value in range(NUM_BINS))
"""Every coordinate token in bin order, as a tokenizer's vocabulary adds them."""


IM_START = "<|im_start|>"
"""Opens a chat turn (``system``, ``user`` or ``assistant`` follows)."""
QUAD_START = "<|quad_start|>"
"""Qwen's quadrilateral tokens: in the vocabulary, unused by Rex-Omni."""
QUAD_END = "<|quad_end|>"
"""Closes a quadrilateral (unused by Rex-Omni)."""
VISION_START = "<|vision_start|>"
"""Opens the image's place in the prompt."""
VISION_END = "<|vision_end|>"
"""Closes the image's place in the prompt."""
VISION_PAD = "<|vision_pad|>"
"""Qwen's vision padding token (unused by Rex-Omni's prompts)."""
IMAGE_PAD = "<|image_pad|>"
"""Stands for one visual token of the image; the processor repeats it."""
VIDEO_PAD = "<|video_pad|>"
"""Stands for one visual token of a video (unused by Rex-Omni)."""
QWEN_SPECIAL_TOKENS = (
    END_OF_TEXT,
    IM_START,
    IM_END,
    OBJECT_REF_START,
    OBJECT_REF_END,
    BOX_START,
    BOX_END,
    QUAD_START,
    QUAD_END,
    VISION_START,
    VISION_END,
    VISION_PAD,
    IMAGE_PAD,
    VIDEO_PAD,
)
"""Qwen2.5-VL's 14 special tokens in Qwen's id order (151643..151656 there);
Rex-Omni's vocabulary adds ``BIN_TOKENS`` after them."""
