"""Training and evaluation data over validated shards, read lazily.

The trainer only takes shards whose manifest vouches for them: listed, unchanged since
``phiv-data validate`` passed on exactly their bytes. Records are not loaded into memory:
each shard gets an index of line start offsets (16 bytes per record), and a record is read
and parsed when the data loader asks for it, in the loader's worker processes, where its
images are decoded too.

``--data DIR`` means the directory's train split (and its val split for evaluation when
present); explicit ``.jsonl`` files are accepted when the manifest beside them lists them.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phiv_data.errors import DataError, Location, ManifestError, UsageError, display_path
from phiv_data.manifest import MANIFEST_NAME, Shard
from phiv_data.schema import Record
from phiv_data.shards import (
    images_root_of,
    load_manifest,
    parse_record,
    relative_posix,
    shard_problems,
    verify_dataset,
)


@dataclass(frozen=True)
class ShardSource:
    """One validated shard: where its lines and images are, and what the manifest says."""

    path: Path
    images_root: Path
    entry: Shard

    @property
    def shown(self) -> str:
        """The shard's path as the user would type it."""
        return display_path(self.path)


def _validate_command(path: Path, images_root: Path | None) -> str:
    root = display_path(images_root) if images_root is not None else "IMAGES_DIR"
    return f"phiv-data validate {display_path(path)} --images-root {root}"


def _sources_from_directory(spec: Path, split: str | None) -> list[ShardSource]:
    directory, manifest = verify_dataset(spec, splits=[split] if split else None)
    return [ShardSource(directory / shard.file, images_root_of(directory, shard), shard)
            for shard in manifest.shards if split is None or shard.split == split]


def _source_from_file(path: Path) -> ShardSource:
    directory = path.parent
    if not (directory / MANIFEST_NAME).is_file():
        raise ManifestError(
            f"{display_path(path)}: no {MANIFEST_NAME} beside it, so nothing vouches for it",
            hint=f"run `{_validate_command(path, None)}`")
    manifest = load_manifest(directory)
    entry = manifest.shard(relative_posix(path, directory))
    if entry is None:
        raise ManifestError(
            f"{display_path(path)}: not listed in {display_path(directory / MANIFEST_NAME)}",
            hint=f"run `{_validate_command(path, None)}`")
    images_root = images_root_of(directory, entry)
    problems = shard_problems(directory, entry)
    if problems:
        raise ManifestError("refusing unvalidated data: " + "; ".join(problems),
                            hint=f"run `{_validate_command(path, images_root)}`")
    return ShardSource(path, images_root, entry)


def resolve_sources(specs: Sequence[str | Path], *, split: str | None) -> list[ShardSource]:
    """The validated shards named by ``--data``/``--eval-data``.

    Args:
        specs: dataset directories, ``manifest.json`` files, or ``.jsonl`` shard files.
        split: for directories and manifests, only shards of this split (``train``,
            ``val``); ``None`` takes all of them. Shard files are taken as given.

    Returns:
        The shards, in the order given (manifest order within a directory); possibly empty
        when a directory has no shard of ``split``.

    Raises:
        ManifestError: a shard without a manifest, not listed, changed since validation,
            never validated or failed: the message names the ``phiv-data validate`` command.
        UsageError: a path that does not exist.
    """
    sources: list[ShardSource] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir() or path.suffix == ".json":
            if not path.exists():
                raise UsageError(f"{display_path(path)}: no such dataset directory or manifest")
            sources.extend(_sources_from_directory(path, split))
        elif path.is_file():
            sources.append(_source_from_file(path))
        else:
            raise UsageError(f"{display_path(path)}: no such file or directory",
                             hint="--data takes a dataset directory, a manifest.json or .jsonl shards")
    return sources


def available_splits(specs: Sequence[str | Path]) -> list[str]:
    """Split names listed in the manifests of the given directories (for error messages)."""
    found: list[str] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir() or path.suffix == ".json":
            try:
                found += [shard.split or "(none)" for shard in load_manifest(path).shards]
            except ManifestError:
                continue
    return sorted(set(found))


def refuse_unlabeled(sources: Sequence[ShardSource]) -> None:
    """Training needs an answer in every record.

    Raises:
        DataError: naming each shard whose manifest counts unlabeled records.
    """
    unlabeled = [f"{source.shown}: {source.entry.unlabeled} of {source.entry.records} records "
                 "have no answer (assistant null)" for source in sources if source.entry.unlabeled]
    if unlabeled:
        raise DataError("cannot train on unlabeled records: " + "; ".join(unlabeled),
                        hint="use such shards as --eval-data (predictions only) or drop them")


def index_lines(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Byte offset, length and line number of every non-blank line of a shard.

    Only 20 bytes per record are kept, so datasets far larger than memory can be indexed.

    Returns:
        ``(offsets, lengths, line_numbers)``: int64, int32 and int64 arrays.
    """
    offsets, lengths, numbers = array("q"), array("i"), array("q")
    position = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                offsets.append(position)
                lengths.append(len(line))
                numbers.append(number)
            position += len(line)
    return (np.frombuffer(offsets, dtype=np.int64), np.frombuffer(lengths, dtype=np.int32),
            np.frombuffer(numbers, dtype=np.int64))


class RecordIndex:
    """Random access to the records of several shards without holding them in memory.

    Reads use ``os.pread`` on a descriptor opened per process, so forked data-loader workers
    never share a file position, and the object pickles (for ``spawn`` workers) without its
    open descriptors.
    """

    def __init__(self, sources: Sequence[ShardSource], *, limit: int | None = None) -> None:
        self.sources = list(sources)
        self._offsets, self._lengths, self._numbers = [], [], []
        for source in self.sources:
            offsets, lengths, numbers = index_lines(source.path)
            if len(offsets) != source.entry.records:
                raise ManifestError(
                    f"{source.shown}: {len(offsets)} records on disk but the manifest says "
                    f"{source.entry.records}", hint=f"run `{_validate_command(source.path, source.images_root)}`")
            self._offsets.append(offsets)
            self._lengths.append(lengths)
            self._numbers.append(numbers)
        counts = [len(offsets) for offsets in self._offsets]
        self._starts = np.cumsum([0, *counts])
        total = int(self._starts[-1])
        self._size = min(total, limit) if limit is not None else total
        self._descriptors: dict[int, int] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self._size

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_descriptors"] = {}
        return state

    def _descriptor(self, shard: int) -> int:
        if self._pid != os.getpid():  # a forked worker: its own descriptors
            self._descriptors, self._pid = {}, os.getpid()
        if shard not in self._descriptors:
            self._descriptors[shard] = os.open(self.sources[shard].path, os.O_RDONLY)
        return self._descriptors[shard]

    def _position(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self._size:
            raise IndexError(f"record {index} out of range (0..{self._size - 1})")
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        return shard, index - int(self._starts[shard])

    def locate(self, index: int) -> tuple[ShardSource, int]:
        """The shard and 1-based line number of record ``index``."""
        shard, position = self._position(index)
        return self.sources[shard], int(self._numbers[shard][position])

    def read(self, index: int) -> tuple[Record, ShardSource, int]:
        """Read and parse record ``index``.

        Returns:
            ``(record, shard, line_number)``.

        Raises:
            DataError: when the line no longer parses (naming file and line).
        """
        shard, position = self._position(index)
        source, number = self.sources[shard], int(self._numbers[shard][position])
        raw = os.pread(self._descriptor(shard), int(self._lengths[shard][position]),
                       int(self._offsets[shard][position]))
        return parse_record(raw, file=source.shown, line_number=number), source, number


Encoder = Callable[[Record, Path], dict[str, Any]]
"""Turns a record and its images root into model inputs (``input_ids``, ``labels``, ...)."""


class RecordDataset:
    """A map-style dataset: record ``i`` of the index, encoded for the model.

    Encoding (reading the line, decoding the images, tokenizing) happens in ``__getitem__``,
    which the data loader runs in its worker processes.

    Args:
        index: where the records are.
        encode: the processor call that turns one record into model inputs.
        keep: positions of the index to use (after the length filter); all when ``None``.
        require_labels: refuse records whose last answer is missing (training).
    """

    def __init__(self, index: RecordIndex, encode: Encoder, *, keep: Sequence[int] | None = None,
                 require_labels: bool = True) -> None:
        self.index = index
        self.encode = encode
        self.keep = np.asarray(keep, dtype=np.int64) if keep is not None else None
        self.require_labels = require_labels

    def __len__(self) -> int:
        return len(self.keep) if self.keep is not None else len(self.index)

    def position(self, item: int) -> int:
        """Index position of dataset item ``item``."""
        return int(self.keep[item]) if self.keep is not None else item

    def __getitem__(self, item: int) -> dict[str, Any]:
        record, source, number = self.index.read(self.position(item))
        if self.require_labels and not record.labeled:
            raise DataError("no answer in the last turn: cannot train on it",
                            location=Location(source.shown, number, "conversations[-1].assistant"))
        return self.encode(record, source.images_root)


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image as the processor sees it (EXIF rotation applied),
    read from its header without decoding the pixels."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112) in (5, 6, 7, 8):  # rotated by 90 or 270 degrees
            width, height = height, width
    return width, height


@dataclass
class LengthScan:
    """Token lengths of the training records and what the length policy does with them."""

    lengths: np.ndarray  # tokens of each record, image tokens included
    keep: list[int]  # index positions that are trained on
    too_long: list[dict[str, Any]]  # {"id", "shard", "line", "tokens"} of each record over the limit


def scan_lengths(index: RecordIndex, processor: Any, *, max_length: int | None,
                 policy: str) -> LengthScan:
    """Measure every training record before training, so the length policy is applied once,
    up front, and reported, instead of surprising the run (or shrinking batches) later.

    Images are not decoded: their sizes come from the file headers.

    Args:
        index: the training records.
        processor: the ``Phi3VProcessor`` (its tokenizer and ``num_crops`` count the tokens).
        max_length: the limit (None: no limit, nothing is read).
        policy: ``error`` (refuse the run, naming the records), ``drop`` (leave them out) or
            ``truncate_turns`` (keep their leading turns that fit; drop those whose first
            turn alone is too long).

    Raises:
        DataError: under ``error``, naming the first records over the limit.
    """
    from phiv_data.phi3v import image_token_count

    if max_length is None:
        return LengthScan(np.zeros(0, dtype=np.int64), list(range(len(index))), [])
    lengths = np.zeros(len(index), dtype=np.int64)
    keep, too_long = [], []
    for position in range(len(index)):
        record, source, line = index.read(position)
        counts = [image_token_count(*image_size(source.images_root / path), processor.num_crops)
                  for path in record.images]
        ids, _ = processor.text.encode(record, counts)
        lengths[position] = len(ids)
        fits = len(ids) <= max_length
        if not fits and policy == "truncate_turns" and len(record.conversations) > 1:
            first_images = len(record.conversations[0].images)
            first, _ = processor.text.encode(record, counts[:first_images], num_turns=1)
            fits = len(first) <= max_length
        if fits:
            keep.append(position)
        else:
            too_long.append({"id": record.id, "shard": source.shown, "line": line,
                             "tokens": len(ids)})
    if too_long and policy == "error":
        shown = ", ".join(f"{item['shard']}:{item['line']} ({item['id']}, {item['tokens']} tokens)"
                          for item in too_long[:5])
        more = f" and {len(too_long) - 5} more" if len(too_long) > 5 else ""
        raise DataError(f"{len(too_long)} training records exceed --max-length {max_length}: "
                        f"{shown}{more}",
                        hint="raise --max-length, lower --num-crops, or choose --too-long drop "
                             "or truncate_turns")
    return LengthScan(lengths, keep, too_long)
