"""Map the phrases Rex-Omni writes back to the labels of a Label Studio control.

The model is asked for phrases (a ``<Label>``'s value, or each of its
``predicted_values`` aliases) and may answer with a slightly different phrase
(``robot-shope`` came back as ``robot-shape``). A phrase maps to a label by,
in order: an exact match, a case- and whitespace-insensitive match, then a
close fuzzy match (difflib) -- only when every close phrase belongs to one
label. A phrase that matches nothing, or is close to two labels, is reported,
never silently given another label. Joint names never match fuzzily (see
``converters.keypoint_sets.joint_key``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

FUZZY_CUTOFF = 0.8
"""difflib ratio a phrase needs to map to a label: one or two typos in a word
pass (``robot-shape`` vs ``robot-shope`` is 0.91), other words do not (``cat``
vs ``car`` is 0.67)."""

ALIAS_SEPARATOR = ","
"""``predicted_values="car,truck"`` and ``rex_categories`` list phrases with commas."""

_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"\w+(?:['’]\w+)*")

RELATION_WORDS = frozenset(
    {
        "of", "on", "in", "at", "near", "next", "left", "right", "behind",
        "under", "above", "below", "beside", "besides", "with", "by", "from",
        "to", "between", "inside", "outside", "over", "beneath", "underneath",
        "around", "across", "along", "against", "into", "onto", "without",
        "among", "atop", "that", "which", "who", "whose", "where", "holding",
        "wearing", "carrying",
    }
)  # fmt: skip
"""Words that end the head of a referring phrase: spatial and relational words
(``on top`` starts with ``on``) and relative pronouns. What follows them
names other things: ``the cup left of the laptop`` is a cup, ``the dog that
chases the cat`` a dog (see :meth:`LabelMap.head_label`)."""

CONJUNCTIONS = frozenset({"and", "or", "nor", "plus"})
"""Words joining two things in one phrase: ``cat and dog`` asks for cats and
dogs, so a phrase joining two labels takes neither (commas separate phrases,
each labelled on its own)."""

PLURAL_ENDINGS = ("s", "es")
"""A label's last word also matches a phrase word with one of these endings:
``red cars`` names ``car``, ``white boxes`` names ``box``."""


class Match(str, Enum):
    """How a model phrase was mapped to a label (reported when not exact)."""

    EXACT = "exact"
    NORMALIZED = "normalized"
    FUZZY = "fuzzy"
    FREE = "free"
    HEAD = "head"
    """A typed phrase naming a label (:meth:`LabelMap.head_label`)."""
    ONLY = "only"
    """A typed phrase naming no label, given the control's only label."""


def normalize_phrase(phrase: str) -> str:
    """Lower-case, trimmed, inner whitespace collapsed to one space."""
    return _SPACES.sub(" ", str(phrase)).strip().casefold()


def phrase_words(phrase: str) -> list[str]:
    """The words of a phrase as compared: normalised (:func:`normalize_phrase`),
    punctuation dropped (``"The cup, left-of"`` -> ``the cup left of``)."""
    return _WORD.findall(normalize_phrase(phrase))


def _occurrences(words: list[str], name: list[str]) -> list[tuple[int, int]]:
    """``(start, end)`` word spans where ``name`` occurs in ``words``; the last
    word of ``name`` may carry a :data:`PLURAL_ENDINGS` ending."""
    n = len(name)
    found = []
    for start in range(len(words) - n + 1):
        *head, last = words[start : start + n]
        if head == name[:-1] and last in {name[-1]} | {
            name[-1] + e for e in PLURAL_ENDINGS
        }:
            found.append((start, start + n))
    return found


def _joins_labels(
    words: list[str], spans: list[tuple[int, int, str]], named: set[int]
) -> bool:
    """A :data:`CONJUNCTIONS` word in ``words`` (outside every name) has a name
    on each side, of different labels (``spans``: ``(start, end, label)``)."""
    for i, word in enumerate(words):
        if word in CONJUNCTIONS and i not in named:
            left = {label for _, end, label in spans if end <= i}
            right = {label for start, _, label in spans if start > i}
            if left and right and len(left | right) > 1:
                return True
    return False


def split_phrases(value: str | None) -> list[str]:
    """``"car, truck,,"`` -> ``["car", "truck"]`` (blank pieces dropped)."""
    if not value:
        return []
    return [p.strip() for p in str(value).split(ALIAS_SEPARATOR) if p.strip()]


@dataclass
class LabelMap:
    """Phrases to ask the model, and the label each answer phrase maps to.

    Attributes:
        phrases: model phrase -> Label Studio label, in the order the phrases
            are asked (the prompt lists them in this order).
        free: True when the control has no fixed labels: an unmatched phrase
            is then its own label instead of being reported.
    """

    phrases: dict[str, str] = field(default_factory=dict)
    free: bool = False
    _normalized: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._normalized = {}
        for phrase, label in self.phrases.items():
            self._normalized.setdefault(normalize_phrase(phrase), label)
        for label in self.labels:
            self._normalized.setdefault(normalize_phrase(label), label)

    @classmethod
    def from_labels(
        cls, labels: Iterable[str], aliases: Mapping[str, Iterable[str]] | None = None
    ) -> LabelMap:
        """One entry per label, or one per alias where a label has aliases."""
        aliases = aliases or {}
        phrases: dict[str, str] = {}
        for label in labels:
            names = list(aliases.get(label) or []) or [label]
            for name in names:
                phrases.setdefault(name, label)
        return cls(phrases=phrases)

    @classmethod
    def free_phrases(cls, phrases: Iterable[str]) -> LabelMap:
        """Each phrase is its own label (controls without fixed labels)."""
        return cls(phrases={p: p for p in phrases}, free=True)

    @property
    def categories(self) -> list[str]:
        """The phrases to ask the model for, in order."""
        return list(self.phrases)

    @property
    def labels(self) -> list[str]:
        """The distinct labels, in order of first appearance."""
        return list(dict.fromkeys(self.phrases.values()))

    def resolve(self, phrase: str) -> str | None:
        """The label for a phrase the model wrote, or None when nothing matches
        (the phrase itself for a free map)."""
        return self.match(phrase)[0]

    def match(self, phrase: str) -> tuple[str | None, Match | None]:
        """``(label, how)``: how the phrase the model wrote maps to a label.

        Exact first, then normalised (:func:`normalize_phrase`), then fuzzy --
        but a fuzzy match counts only when every close phrase (difflib ratio
        >= ``FUZZY_CUTOFF``) belongs to the same label: a phrase near two
        labels matches neither, so a look-alike never picks a label at
        random. ``(None, None)`` when nothing matches (a free map keeps the
        phrase as its own label, ``how`` ``FREE``).
        """
        if phrase in self.phrases:
            return self.phrases[phrase], Match.EXACT
        key = normalize_phrase(phrase)
        if key in self._normalized:
            return self._normalized[key], Match.NORMALIZED
        close = difflib.get_close_matches(
            key,
            list(self._normalized),
            n=max(1, len(self._normalized)),
            cutoff=FUZZY_CUTOFF,
        )
        labels = {self._normalized[c] for c in close}
        if len(labels) == 1:
            return labels.pop(), Match.FUZZY
        return (phrase, Match.FREE) if self.free else (None, None)

    def label_in_phrase(self, phrase: str) -> str | None:
        """The one label whose name (or an alias) occurs in ``phrase`` as
        whole words (``Text`` in ``text line``), else None -- also when the
        names of two labels occur."""
        found = {label for _, _, label in self._label_spans(phrase_words(phrase))}
        return found.pop() if len(found) == 1 else None

    def head_label(self, phrase: str) -> str | None:
        """The label a free referring phrase is about (its head noun), or None
        when it names no label.

        The label names (and aliases) occurring in ``phrase`` as whole words
        (:func:`phrase_words`) are found; the phrase is cut at the first
        :data:`RELATION_WORDS` word after the first name (a relation word
        inside a name does not cut), and the name ending last before the cut
        wins, the longest on a tie: ``Car`` in ``red sports car``, ``cup`` in
        ``the cup left of the laptop`` and in ``the left cup next to the
        laptop``, ``laptop`` in ``left of the laptop``. None also when a
        :data:`CONJUNCTIONS` word joins two labels before the cut (``cat and
        dog`` asks for both: no one label fits their regions).
        """
        words = phrase_words(phrase)
        spans = self._label_spans(words)
        if not spans:
            return None
        named = {i for start, end, _ in spans for i in range(start, end)}
        first_end = min(end for _, end, _ in spans)
        cut = next(
            (
                i
                for i in range(first_end, len(words))
                if words[i] in RELATION_WORDS and i not in named
            ),
            len(words),
        )
        before = [s for s in spans if s[1] <= cut]
        if _joins_labels(words[:cut], before, named):
            return None
        head = max(before, key=lambda s: (s[1], s[1] - s[0]))
        return head[2]

    def _label_spans(self, words: list[str]) -> list[tuple[int, int, str]]:
        """``(start, end, label)`` for every label name (or alias) in ``words``."""
        return [
            (start, end, label)
            for name, label in self._normalized.items()
            if (name_words := phrase_words(name))
            for start, end in _occurrences(words, name_words)
        ]

    def prompt_match(self, phrase: str) -> tuple[str | None, Match | None]:
        """``(label, how)`` for a phrase a user typed, which the model is asked
        as typed (a free phrase such as ``red sports car``).

        The label the phrase is (exact or normalised match), else the label it
        names (:meth:`head_label`), else a fuzzy match, else the map's only
        label; ``(None, None)`` when none fits (a free map keeps the phrase).
        """
        label, how = self.match(phrase)
        if how in (Match.EXACT, Match.NORMALIZED):
            return label, how
        head = self.head_label(phrase)
        if head is not None:
            return head, Match.HEAD
        if label is not None:
            return label, how
        labels = self.labels
        return (labels[0], Match.ONLY) if len(labels) == 1 else (None, None)

    def restricted_to(self, phrases: Iterable[str]) -> LabelMap:
        """A map asking only ``phrases``, each mapped through this map.

        Raises ValueError naming the phrases that match no label (free maps
        keep them as their own labels).
        """
        mapped: dict[str, str] = {}
        unknown: list[str] = []
        for phrase in phrases:
            label = self.resolve(phrase)
            if label is None:
                unknown.append(phrase)
            else:
                mapped[phrase] = label
        if unknown:
            raise ValueError(
                f"phrase(s) {unknown} match no label; labels: {self.labels}"
            )
        return LabelMap(phrases=mapped, free=self.free)
