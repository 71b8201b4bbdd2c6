"""Validate one byte range of a JSONL file: the unit of work of a validation worker.

A chunk is read in blocks of 128 KiB (never the whole file), split into lines, and each
line decoded straight into the fast-path structs. Checks that would cost a Python loop per
record run in bulk instead: a memchr over the block for ``<``, ``\\`` and DEL finds the few
lines whose text needs the special-token and control-character rules; ``str.isspace`` over
all texts finds blank ones; one set lookup per image path (``ImageResolver``) settles
existence. Only flagged records, and lines the fast path rejects, take the slow, precise
path. Line numbers are relative to the chunk; the runner shifts them.
"""

from __future__ import annotations

import gc
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from itertools import chain, islice
from operator import attrgetter

from phiv_data.validate.fastpath import (
    DecodeError,
    FastRecord,
    decode_record,
    meta_accepted,
    with_meta,
)
from phiv_data.validate.issues import Issue
from phiv_data.validate.media import ImageResolver, MediaInspector, first_lines
from phiv_data.validate.options import ValidationOptions
from phiv_data.validate.rules import (
    check_texts,
    check_unlabeled_turns,
    image_fields,
    path_syntax_problem,
)
from phiv_data.validate.syntax import classify_line
from phiv_data.validate.tokens import TokenCounter, image_tokens, record_length

BLOCK_BYTES = 128 << 10
# Small enough that the objects decoded from one block are still in the CPU cache when the
# bulk checks walk them again (existence, texts, counts). On the UCF-101-shaped bench file,
# validating the whole file as one chunk took 4% (quiet machine) to 20% (other processes
# sharing the caches) less CPU than with 4 MiB blocks; end to end, with hashing and start-up,
# the difference was within noise. Longer lines are carried over up to --max-line-bytes.
READ_BYTES = 4 << 20
# Bytes per read, and per ``digest.update`` in the hashing thread, which needs the GIL back
# after each call: with 128 KiB reads, validating the 300,000-line bench file took 3-7%
# longer end to end.
# Literal patterns: the regex engine scans for a literal prefix faster than `in` does for
# two-character needles made of common path characters.
_PARENT_OR_ABSOLUTE = re.compile(r"\.\.")
_NEWLINE_SLASH = re.compile(r"\n/")
BOM = b"\xef\xbb\xbf"

_ID = attrgetter("id")
_CONVERSATIONS = attrgetter("conversations")
_IMAGES = attrgetter("images")
_USER = attrgetter("user")
_ASSISTANT = attrgetter("assistant")


@dataclass(frozen=True)
class ChunkTask:
    """One byte range ``[start, end)`` of a file, starting at a line start."""

    file_index: int
    path: str
    start: int
    end: int
    options: ValidationOptions
    images_root: str | None = None
    """Absolute images root for file checks; ``None`` checks path syntax only."""
    collect_references: bool = False
    """Return every image path (to find images shared between files)."""
    run: str = ""
    """Identifies one validation run: what a worker learnt about the file system is kept
    across the chunks of a run, never into the next run (files may have changed)."""


@dataclass
class ChunkResult:
    """What a chunk holds and what is wrong with it (lines relative to the chunk)."""

    file_index: int
    start: int
    lines: int = 0
    size: int = 0
    issues: list[Issue] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)
    records: int = 0
    unlabeled: int = 0
    first_unlabeled: int | None = None
    images: int = 0
    images_per_record: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)
    token_lengths: list[int] = field(default_factory=list)
    crlf: int = 0
    first_crlf: int | None = None
    references: list[str] = field(default_factory=list)
    reference_counts: list[int] = field(default_factory=list)
    """Images per line (0 where no record), aligned with ``ids``."""
    content: list[tuple[str, str, int, str, str]] = field(default_factory=list)
    """``(sha256, path, line, field, record id)`` of each image decoded here."""


# Per-process caches: a worker keeps what it learnt about the file system across the
# chunks of one run (see ChunkTask.run); token counters only depend on the tokenizer.
_RESOLVERS: dict[str, ImageResolver] = {}
_INSPECTORS: dict[tuple[str, int, float], MediaInspector] = {}
_COUNTERS: dict[str | None, TokenCounter] = {}
_CACHED_RUN = [""]


def _start_run(run: str) -> None:
    if _CACHED_RUN[0] != run:
        _RESOLVERS.clear()
        _INSPECTORS.clear()
        _CACHED_RUN[0] = run


def read_pieces(path: str, start: int, end: int, size: int | None = None) -> Iterator[bytes]:
    """The bytes ``[start, end)`` of ``path``, in pieces of ``size`` bytes (default
    ``READ_BYTES``; the last one shorter, and fewer bytes when the file is shorter)."""
    size = size or READ_BYTES
    with open(path, "rb") as handle:
        handle.seek(start)
        remaining = end - start
        while remaining > 0:
            piece = handle.read(min(size, remaining))
            if not piece:
                return
            remaining -= len(piece)
            yield piece


def validate_chunk(task: ChunkTask, pieces: Iterable[bytes] | None = None) -> ChunkResult:
    """Validate one chunk (runs in a worker process or inline).

    Args:
        task: the byte range and options.
        pieces: the chunk's bytes, in order (default: :func:`read_pieces`); the runner
            passes the pieces a reading and hashing thread reads ahead.

    Returns:
        The chunk's :class:`ChunkResult`.
    """
    # The fast-path structs hold no reference cycles; the cyclic collector only burns time
    # walking the many young objects a block creates.
    _start_run(task.run)
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _ChunkValidator(task).run(pieces)
    finally:
        if collecting:
            gc.enable()


class _ChunkValidator:
    def __init__(self, task: ChunkTask) -> None:
        self.task = task
        self.options = task.options
        self.result = ChunkResult(task.file_index, task.start)
        self.resolver: ImageResolver | None = None
        self.inspector: MediaInspector | None = None
        self.counter: TokenCounter | None = None
        self.reported_media: set[str] = set()
        root = task.images_root
        if root is not None and self.options.check_images != "none":
            if root not in _RESOLVERS:
                _RESOLVERS[root] = ImageResolver(root)
            self.resolver = _RESOLVERS[root]
        if root is not None and (self.options.check_images == "decode"
                                 or self.options.max_length is not None):
            key = (root, self.options.max_image_pixels, self.options.max_aspect_ratio)
            if key not in _INSPECTORS:
                _INSPECTORS[key] = MediaInspector(
                    root, max_pixels=self.options.max_image_pixels,
                    max_aspect_ratio=self.options.max_aspect_ratio)
            self.inspector = _INSPECTORS[key]
        if self.options.max_length is not None:
            name = str(self.options.tokenizer) if self.options.tokenizer else None
            if name not in _COUNTERS:
                _COUNTERS[name] = TokenCounter(self.options.tokenizer)
            self.counter = _COUNTERS[name]

    # -- reading -----------------------------------------------------------------------
    def run(self, pieces: Iterable[bytes] | None = None) -> ChunkResult:
        task, result = self.task, self.result
        # Blocks no longer than the line limit: only a block's first line (which may
        # continue the previous block) can then exceed it, so no line is measured twice.
        block_bytes = min(BLOCK_BYTES, self.options.max_line_bytes)
        carry = b""
        skipped = 0  # bytes of an over-long line dropped so far
        at_file_start = task.start == 0
        if pieces is None:
            pieces = read_pieces(task.path, task.start, task.end)
        for piece in pieces:
            if len(piece) <= block_bytes:
                carry, skipped, at_file_start = self._block(piece, carry, skipped,
                                                            at_file_start)
                continue
            for offset in range(0, len(piece), block_bytes):
                carry, skipped, at_file_start = self._block(
                    piece[offset:offset + block_bytes], carry, skipped, at_file_start)
        if carry or skipped:
            self._process(carry, skipped)
        return result

    def _block(self, block: bytes, carry: bytes, skipped: int, at_file_start: bool
               ) -> tuple[bytes, int, bool]:
        """Validate the complete lines of ``carry + block``; return the new carry, bytes
        skipped of an over-long line, and whether the file start is still ahead."""
        self.result.size += len(block)
        if at_file_start:
            at_file_start = False
            if block.startswith(BOM):
                self.result.issues.append(Issue(
                    "E-BOM", "the file starts with a UTF-8 byte-order mark: save it "
                    "as UTF-8 without BOM", None, 1))
                block = block[len(BOM):]
        if block.rfind(b"\n") < 0:
            if skipped or len(carry) + len(block) > self.options.max_line_bytes:
                return b"", skipped + len(carry) + len(block), at_file_start
            return carry + block, skipped, at_file_start
        # The block's incomplete last line goes through the split too and comes back as
        # the carry, and the previous carry is joined to the first line only: the block
        # itself is never copied.
        return self._process(block, skipped, True, carry), 0, at_file_start

    # -- one block of complete lines --------------------------------------------------
    def _process(self, data: bytes, skipped: int, partial: bool = False,
                 head: bytes = b"") -> bytes:
        """Validate the lines of ``head + data``; with ``partial``, the text after the last
        newline is an incomplete line: it is left out and returned (else ``b""``). The bytes
        are only scanned for bytes that flag lines for a closer look, so the incomplete line
        can only cause a scan of the complete ones."""
        result, options = self.result, self.options
        # Lines keep their "\n" (JSON whitespace to the decoder; ``_slow`` drops it):
        # ``BytesIO.readlines`` finds line ends with memchr, where CPython 3.11's
        # ``bytes.split`` compares byte by byte (0.04 s against 0.11 s over the bench file).
        lines = BytesIO(data).readlines() or [b""]
        if head:
            lines[0] = head + lines[0]
        rest = b""
        if partial and not lines[-1].endswith(b"\n"):
            rest = lines.pop()
        count = len(lines)
        base = result.lines  # lines before this block, within the chunk
        result.lines += count
        # Only a block's first line can exceed the limit (blocks are no longer than it).
        first = len(lines[0]) - lines[0].endswith(b"\n")
        too_long = skipped + first if skipped or first > options.max_line_bytes else None
        if b"\r" in data or b"\r" in head:
            for index, line in enumerate(lines):
                if line.endswith((b"\r\n", b"\r")):
                    lines[index] = line[:line.rindex(b"\r")]
                    result.crlf += 1
                    if result.first_crlf is None:
                        result.first_crlf = base + index + 1
        precise: set[int] = set()
        records, all_fast = self._decode(lines, base, too_long, precise)
        self._check_meta(records, all_fast, lines, base, precise, data, head)
        failed = records.count(None)
        if failed:
            valid = [record for record in records if record is not None]
            located = [(base + index + 1, record) for index, record in enumerate(records)
                       if record is not None]
            result.ids.extend(None if record is None else record.id for record in records)
        else:
            valid = records
            located = None
            result.ids.extend(map(_ID, records))
        if not valid:
            if self.task.collect_references:
                result.reference_counts.extend([0] * count)
            return rest

        def where() -> list[tuple[int, object]]:
            nonlocal located
            if located is None:
                located = [(base + index + 1, record) for index, record in enumerate(records)]
            return located

        turns = list(chain.from_iterable(map(_CONVERSATIONS, valid)))
        single_turn = len(turns) == len(valid)
        answers = list(map(_ASSISTANT, turns))
        null_answers = answers.count(None)
        image_lists = list(map(_IMAGES, turns))
        # Text rules: flag lines by a memchr over the block, blank text by str.isspace.
        if any(b"<" in part or b"\\" in part or b"\x7f" in part for part in (data, head)):
            precise.update(index for index, line in enumerate(lines)
                           if b"<" in line or b"\\" in line or b"\x7f" in line)
        if any(map(str.isspace, map(_USER, turns))) or any(
                map(str.isspace, filter(None, answers) if null_answers else answers)):
            precise.update(range(count))
        if not single_turn:
            precise.update(index for index, record in enumerate(records)
                           if record is not None and len(record.conversations) > 1)
        for index in sorted(precise):
            record = records[index]
            if record is not None:
                result.issues.extend(check_texts(record, base + index + 1))
                if len(record.conversations) > 1:
                    result.issues.extend(check_unlabeled_turns(record, base + index + 1))
        # Counts and the label distribution (answers of single-turn records).
        result.records += len(valid)
        if single_turn:
            image_counts = list(map(len, image_lists))
            result.labels.update(filter(None, answers) if null_answers else answers)
            last_answers = answers
        else:
            image_counts = [sum(map(len, map(_IMAGES, record.conversations))) for record in valid]
            result.labels.update(record.conversations[0].assistant for record in valid
                                 if len(record.conversations) == 1
                                 and record.conversations[0].assistant is not None)
            last_answers = [record.conversations[-1].assistant for record in valid]
        if image_counts.count(image_counts[0]) == len(image_counts):  # one count: C speed
            result.images_per_record[image_counts[0]] += len(image_counts)
        else:
            result.images_per_record.update(image_counts)
        result.images += sum(image_counts)
        unlabeled = last_answers.count(None)
        if unlabeled:
            result.unlabeled += unlabeled
            if result.first_unlabeled is None:
                result.first_unlabeled = where()[last_answers.index(None)][0]
        if self.task.collect_references:
            if failed:
                per_line = iter(image_counts)
                result.reference_counts.extend(0 if record is None else next(per_line)
                                               for record in records)
            else:
                result.reference_counts.extend(image_counts)
        bad: dict[str, tuple[str, str]] = {}
        decode = options.check_images == "decode" and self.inspector is not None
        if self.task.collect_references or decode or self.resolver is None:
            paths = list(chain.from_iterable(image_lists))
            if self.task.collect_references:
                result.references.extend(paths)
            bad = self._path_problems(paths) if paths else {}
        elif not self.resolver.known.issuperset(chain.from_iterable(image_lists)):
            # Common case above: every reference is a file already seen (one set lookup
            # each, no list built). Otherwise look closer.
            paths = list(chain.from_iterable(image_lists))
            bad = self.resolver.problems(paths)
        if decode:
            bad.update(self._decode_images(paths, bad, where))
        if bad:
            for line, record in where():
                for field_path, path in image_fields(record):
                    if path in bad:
                        code, message = bad[path]
                        result.issues.append(Issue(code, message, None, line, field_path,
                                                   record.id))  # type: ignore[attr-defined]
        if self.counter is not None:
            self._token_budget(where(), bad)
        return rest

    def _decode(self, lines: list[bytes], base: int, too_long: int | None,
                precise: set[int]) -> tuple[list, bool]:
        """The records of ``lines`` (``None`` where a line is not one), and whether they
        all came from the fast path. ``too_long``: the length of the first line when it
        exceeds the limit; it is reported and not parsed, even when it would decode."""
        records: list = []
        if too_long is None:
            try:
                return list(map(decode_record, lines)), True  # the common case
            except DecodeError:
                pass
        else:
            self.result.issues.append(Issue(
                "E-LINE-TOO-LONG", f"line of {too_long:,} bytes exceeds the "
                f"{self.options.max_line_bytes:,}-byte limit (not parsed); split or shorten it "
                "(or raise --max-line-bytes)", None, base + 1))
            records.append(None)
        append = records.append
        count = len(lines)
        start = len(records)
        while start < count:
            try:
                for line in islice(lines, start, None) if start else lines:
                    append(decode_record(line))
                break
            except DecodeError:
                index = len(records)
                append(self._slow(lines[index], base + index + 1))
                if records[-1] is not None:
                    precise.add(index)
                start = index + 1
        return records, False

    def _check_meta(self, records: list, all_fast: bool, lines: list[bytes], base: int,
                    precise: set[int], data: bytes, head: bytes) -> None:
        """The fast path keeps ``meta`` as raw JSON (see fastpath): finish checking the
        lines that have one; a line it must not accept goes to the slow path."""
        if all_fast:
            present = with_meta(records)
        else:
            fast = [index for index, record in enumerate(records)
                    if type(record) is FastRecord]
            present = [fast[index] for index in with_meta([records[index] for index in fast])]
        if not present:
            return
        ascii_block = data.isascii() and head.isascii()
        for index in present:
            line = lines[index]
            if not meta_accepted(records[index], line, ascii_block or line.isascii()):
                records[index] = self._slow(line, base + index + 1)
                if records[index] is not None:
                    precise.add(index)

    def _slow(self, raw: bytes, line: int):
        """Every problem of a line the fast path rejected (its record, if valid after all)."""
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        issues, record = classify_line(raw, line)
        self.result.issues.extend(issues)
        return record

    # -- images ---------------------------------------------------------------------
    def _path_problems(self, paths: list[str]) -> dict[str, tuple[str, str]]:
        if self.resolver is not None:
            return self.resolver.problems(paths)
        joined = "\n".join(paths)
        if ("\\" in joined or ":" in joined or joined.startswith(("/", "..")) or
                _PARENT_OR_ABSOLUTE.search(joined) or _NEWLINE_SLASH.search(joined)):
            return {path: problem for path in set(paths)
                    if (problem := path_syntax_problem(path)) is not None}
        return {}

    def _decode_images(self, paths: list[str], bad: dict, where) -> dict[str, tuple[str, str]]:
        """Decode each image once per worker. Returns the unusable ones (reported on every
        line that uses them); warnings and content hashes are recorded at first use."""
        inspector = self.inspector
        assert inspector is not None
        unusable: dict[str, tuple[str, str]] = {}
        candidates = set(paths).difference(bad)
        fresh = candidates.difference(self.reported_media)
        located = first_lines(where(), fresh) if fresh else {}
        self.reported_media.update(fresh)
        # In order of first use (line, then field), so that of two identical images the
        # earlier one is the original and the later one is reported.
        order = {path: position for position, path in enumerate(located)}
        for path in sorted(candidates, key=lambda item: order.get(item, -1)):
            report, first_time = inspector.inspect(path)
            problems = inspector.problems(report)
            errors = [problem for problem in problems if problem[0].startswith("E-")]
            if errors:
                unusable[path] = (errors[0][0], f"image {path!r}: {errors[0][1]}")
            if path not in located:
                continue
            line, field_path, record_id = located[path]
            if first_time:
                for code, message in problems:
                    if not code.startswith("E-"):
                        self.result.issues.append(Issue(code, f"image {path!r}: {message}",
                                                        None, line, field_path, record_id))
            if report.sha256 is not None and not errors:
                self.result.content.append((report.sha256, path, line, field_path, record_id))
        return unusable

    def _token_budget(self, located: list, bad: dict) -> None:
        options, result = self.options, self.result
        counter, inspector = self.counter, self.inspector
        assert counter is not None and options.max_length is not None
        estimated = "" if counter.exact else " (estimated: pass --tokenizer for exact counts)"
        for line, record in located:
            counts: list[int] = []
            for field_path, path in image_fields(record):
                if path in bad or inspector is None:
                    break
                size = inspector.size(path)
                if isinstance(size[0], str):
                    if path not in self.reported_media:
                        self.reported_media.add(path)
                        result.issues.append(Issue(size[0], f"image {path!r}: {size[1]}",  # type: ignore[arg-type]
                                                   None, line, field_path, record.id))
                    break
                counts.append(image_tokens(size[0], size[1], options.num_crops))  # type: ignore[arg-type]
            else:
                total, first_answer = record_length(record, counts, counter)
                result.token_lengths.append(total)
                if total > options.max_length:
                    result.issues.append(Issue(
                        "W-TOKENS-OVER", f"{total} tokens ({sum(counts)} for {len(counts)} "
                        f"image(s) at num_crops={options.num_crops}) exceed --max-length "
                        f"{options.max_length}{estimated}: phiv-train stops on it unless "
                        "--too-long drop or truncate_turns; use fewer images or crops, or raise "
                        "the budget",
                        None, line, None, record.id))
                if first_answer is not None and first_answer >= options.max_length:
                    result.issues.append(Issue(
                        "E-TOKENS-NOTHING-TO-LEARN", f"the first answer starts at token "
                        f"{first_answer}, beyond --max-length {options.max_length}"
                        f"{estimated}: every label would be masked; use fewer or smaller "
                        "images, fewer crops, or a larger --max-length", None, line, None,
                        record.id))
