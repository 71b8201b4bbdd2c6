"""Dataset statistics for the preview: counts over every line, measurements over a sample.

:class:`DatasetCounts` sees every line of the file (records, images per record, turns,
answers) with constant memory per distinct value; the answer counter keeps at most
``MAX_DISTINCT_ANSWERS`` distinct answers and counts the rest together, so free-text
answers over a million records stay small. :func:`measure` reads the *headers* of the
images of a sample of records (never decoding them) for the image-size and token-length
plots; token lengths follow ``phiv_data.validate.tokens`` exactly (image tokens from
``phiv_data.phi3v.image_token_count``), with text tokens estimated unless a tokenizer is
given.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from phiv_data.errors import PhivError
from phiv_data.schema import Record

MAX_DISTINCT_ANSWERS = 10_000
ANSWER_KEY_CHARACTERS = 80
UNLABELED = "(unlabeled)"


class CappedCounter:
    """A ``Counter`` that stops adding new keys after ``limit`` distinct ones."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: Counter[str] = Counter()
        self.overflow = 0

    def add(self, key: str) -> None:
        if key in self.counts or len(self.counts) < self.limit:
            self.counts[key] += 1
        else:
            self.overflow += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values()) + self.overflow


@dataclass
class DatasetCounts:
    """Counts over every line of a shard (parsed with ``orjson``, shape checked loosely)."""

    lines: int = 0
    blank_lines: int = 0
    not_records: int = 0
    records: int = 0
    images: int = 0
    unlabeled: int = 0
    images_per_record: Counter[int] = field(default_factory=Counter)
    turns_per_record: Counter[int] = field(default_factory=Counter)
    answers: CappedCounter = field(default_factory=lambda: CappedCounter(MAX_DISTINCT_ANSWERS))

    def add_line(self, raw: bytes) -> None:
        """Count one non-blank line; lines that are not record-shaped are only counted."""
        self.lines += 1
        try:
            value = orjson.loads(raw)
            turns = value["conversations"]
            images = sum(len(turn.get("images") or ()) for turn in turns)
            answer = turns[-1]["assistant"]
        except (orjson.JSONDecodeError, TypeError, KeyError, IndexError, AttributeError):
            self.not_records += 1
            return
        self.records += 1
        self.images += images
        self.images_per_record[images] += 1
        self.turns_per_record[len(turns)] += 1
        if answer is None:
            self.unlabeled += 1
            self.answers.add(UNLABELED)
        else:
            text = str(answer).strip()
            if len(text) > ANSWER_KEY_CHARACTERS:
                text = text[:ANSWER_KEY_CHARACTERS - 1] + "\u2026"
            self.answers.add(text)


@dataclass
class Measurements:
    """Image sizes and token lengths over the measured sample."""

    records: int = 0
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    unreadable_images: int = 0
    token_lengths: list[int] = field(default_factory=list)
    tokens_exact: bool = False


def parse_sampled(raw: bytes) -> Record | None:
    """The record of a sampled line, or ``None`` when the line is not a valid record."""
    try:
        return Record.model_validate_json(raw)
    except ValidationError:
        return None


def image_size(path: Path, cache: dict[Path, tuple[int, int] | None]) -> tuple[int, int] | None:
    """``(width, height)`` as displayed, from the header only; ``None`` when unreadable."""
    if path not in cache:
        from phiv_data.media.images import read_image_header

        try:
            cache[path] = read_image_header(path).oriented_size
        except PhivError:
            cache[path] = None
    return cache[path]


def measure(records: list[Record], images_root: Path, *, num_crops: int,
            tokenizer: Path | None = None,
            cache: dict[Path, tuple[int, int] | None] | None = None) -> Measurements:
    """Image sizes (each distinct image once) and token lengths of ``records``.

    Args:
        records: the measured sample.
        images_root: folder the image paths are relative to.
        num_crops: Phi-3.5-vision ``num_crops`` for the image token counts.
        tokenizer: a folder with ``tokenizer.json`` for exact text tokens (else estimated).
        cache: header sizes already read, by path (filled in).

    Returns:
        The :class:`Measurements`; records with an unreadable image get no token length.
    """
    from phiv_data.validate.tokens import TokenCounter, image_tokens, record_length

    cache = {} if cache is None else cache
    counter = TokenCounter(tokenizer)
    result = Measurements(records=len(records), tokens_exact=counter.exact)
    seen: set[Path] = set()
    for record in records:
        counts: list[int] | None = []
        for image in record.images:
            path = images_root / image
            size = image_size(path, cache)
            if path not in seen:
                seen.add(path)
                if size is None:
                    result.unreadable_images += 1
                else:
                    result.image_sizes.append(size)
            if size is None or counts is None:
                counts = None
                continue
            counts.append(image_tokens(size[0], size[1], num_crops))
        if counts is not None:
            result.token_lengths.append(record_length(record, counts, counter)[0])
    return result


def top_answers(counter: CappedCounter, limit: int = 20) -> list[tuple[str, int]]:
    """The ``limit`` most frequent answers, then the rest together as one bar."""
    top = counter.counts.most_common(limit)
    rest = counter.total - sum(count for _, count in top)
    if rest:
        distinct = len(counter.counts) - len(top)
        more = "+" if counter.overflow else ""
        top.append((f"({distinct}{more} other answers)", rest))
    return top


def describe(values: list[int] | list[float]) -> dict[str, Any]:
    """min, median, p95 and max of a list (empty dict for no values)."""
    if not values:
        return {}
    ordered = sorted(values)

    def at(fraction: float) -> Any:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    return {"min": ordered[0], "median": at(0.5), "p95": at(0.95), "max": ordered[-1]}
