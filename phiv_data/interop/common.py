"""What every foreign format shares: reading rows, image paths, and the import/export report.

A row that cannot be converted is *rejected*: it is left out of the output data file, but
it is never lost: it is reported as ``file:line: [code] message``, counted, and copied
verbatim (with its line and reason) into ``<stem>.<direction>-rejected.ndjson`` beside the
output. A row that is converted with a change (an image tag moved, a system prompt kept in
``meta``, an image file missing) carries a *warning*. With ``strict`` any rejected row or
warning fails the run and nothing is written.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import orjson

from phiv_data.errors import DataError, Location, display_path
from phiv_data.interop.tags import Message, RowRejected, RowWarning
from phiv_data.shards import atomic_write

MAX_KEPT_ISSUES = 1000
"""Issues kept in a report (all are counted by code; rejected rows are all kept)."""


@dataclass
class ForeignRow:
    """A foreign row taken apart: its messages, raw image references and record fields."""

    messages: list[Message]
    images: list[Any]
    record_id: str
    source: str | None = None
    meta: dict[str, Any] | None = None
    messages_field: str = "messages"
    warnings: list[RowWarning] = field(default_factory=list)


@dataclass(frozen=True)
class RowIssue:
    """A problem with one row: rejected (``error``) or converted with a change (``warning``)."""

    file: str
    line: int | None
    code: str
    severity: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        outcome = " (row left out)" if self.severity == "error" else ""
        return f"{where}: [{self.code}] {self.message}{outcome}"


@dataclass
class InteropReport:
    """What an import or export of one file did, row by row."""

    direction: str
    format: str
    input: str
    outputs: list[str] = field(default_factory=list)
    rows: int = 0
    written: int = 0
    rejected: int = 0
    changed: int = 0
    by_code: Counter = field(default_factory=Counter)
    issues: list[RowIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, line: int | None, code: str, severity: str, message: str) -> None:
        """Count one issue and keep it if fewer than ``MAX_KEPT_ISSUES`` are kept."""
        self.by_code[code] += 1
        if len(self.issues) < MAX_KEPT_ISSUES:
            self.issues.append(RowIssue(self.input, line, code, severity, message))

    @property
    def problems(self) -> int:
        return sum(self.by_code.values())

    def summary(self) -> str:
        """One line: rows read, written, left out, changed."""
        return (f"{self.input}: {self.rows} rows, {self.written} written, "
                f"{self.rejected} left out, {self.changed} changed")

    def to_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction, "format": self.format, "input": self.input,
            "outputs": self.outputs, "rows": self.rows, "written": self.written,
            "rejected": self.rejected, "changed": self.changed,
            "by_code": dict(sorted(self.by_code.items())),
            "issues": [vars(issue) for issue in self.issues],
            "issues_truncated": self.problems > len(self.issues),
            "notes": self.notes,
        }


def fail_if_strict(report: InteropReport, strict: bool) -> None:
    """Under ``strict``, any issue fails the run (raised inside the writers: nothing lands).

    Raises:
        DataError: listing the first issues and the count by code.
    """
    if not strict or not report.problems:
        return
    shown = "; ".join(str(issue) for issue in report.issues[:5])
    counts = ", ".join(f"{code} x{count}" for code, count in sorted(report.by_code.items()))
    raise DataError(f"--strict: {report.problems} problem(s) ({counts}): {shown}",
                    hint="fix the rows, or run without --strict to write the others and "
                         "keep the left-out rows in a side file")


class RejectedRows:
    """Streams rejected rows into ``<stem>.<direction>-rejected.ndjson`` (created on first use)."""

    def __init__(self, stack: ExitStack, path: Path) -> None:
        self._stack = stack
        self.path = path
        self._handle: IO[bytes] | None = None

    def write(self, line: int | None, code: str, message: str, row: Any) -> None:
        if self._handle is None:
            self._handle = self._stack.enter_context(atomic_write(self.path, "wb"))
        entry = {"line": line, "code": code, "reason": message, "row": row}
        self._handle.write(orjson.dumps(entry, default=_json_fallback) + b"\n")


def _json_fallback(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return repr(value)


def write_report(report: InteropReport, path: Path) -> None:
    """Write the report JSON atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2) + b"\n")


# --- reading foreign JSON files -----------------------------------------------------------

def iter_json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, value)`` for each row of a JSON array file or a JSON Lines file.

    A JSON array (``[{...}, {...}]``, as LLaVA and LLaMA-Factory write them) is decoded one
    element at a time so that every row keeps the line it starts on. In JSON Lines a line
    that is not JSON is yielded as a :class:`RowRejected` (the other lines still count).

    Raises:
        DataError: when a JSON array is malformed (no row after that point can be found).
    """
    shown = display_path(path)
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        yield from _iter_array(path, shown)
        return
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if number == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")
            if not line.strip():
                continue
            try:
                yield number, orjson.loads(line)
            except orjson.JSONDecodeError as error:
                yield number, RowRejected("bad-json", f"not valid JSON ({error})")


def _iter_array(path: Path, shown: str) -> Iterator[tuple[int, Any]]:
    text = path.read_text(encoding="utf-8-sig")
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    line = 1 + text.count("\n", 0, position)
    while True:
        start = _skip_space(text, position)
        line += text.count("\n", position, start)
        if start < len(text) and text[start] == "]":
            return
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as error:
            raise DataError(f"not valid JSON: {error.msg}",
                            location=Location(shown, error.lineno),
                            hint="fix the file; rows after this point cannot be read") from None
        yield line, value
        line += text.count("\n", start, end)
        position = _skip_space(text, end)
        line += text.count("\n", end, position)
        if position < len(text) and text[position] == ",":
            position += 1
        elif position < len(text) and text[position] == "]":
            return
        else:
            raise DataError("not valid JSON: expected ',' or ']' after a row",
                            location=Location(shown, line), hint="fix the file")


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def write_json_array(handle: IO[bytes], rows: Iterator[dict[str, Any]]) -> int:
    """Write rows as a JSON array with one row per line; return how many."""
    count = 0
    handle.write(b"[")
    for row in rows:
        handle.write(b"\n" if count == 0 else b",\n")
        handle.write(orjson.dumps(row))
        count += 1
    handle.write(b"\n]\n" if count else b"]\n")
    return count


# --- image paths --------------------------------------------------------------------------

def relative_image_path(raw: Any, root: Path) -> str:
    """A foreign image reference as a phiv path relative to ``root`` (``/`` separators).

    Relative references are taken relative to ``root``; absolute ones are accepted when they
    lie inside it. ``./`` and inner ``..`` are normalised away.

    Raises:
        RowRejected: when it is not a non-empty string, holds a backslash, or leaves ``root``.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise RowRejected("bad-image", f"image reference {raw!r} is not a file path")
    if "\\" in raw:
        raise RowRejected("bad-image", f"image path {raw!r} uses '\\\\': write '/' separators")
    if posixpath.isabs(raw):
        try:
            relative = PurePosixPath(os.path.normpath(raw)).relative_to(
                os.path.normpath(root.absolute()))
        except ValueError:
            raise RowRejected(
                "image-outside-root",
                f"absolute image path {raw!r} is outside the images root "
                f"{display_path(root)} (pass --images-root)") from None
        return relative.as_posix()
    normal = posixpath.normpath(raw)
    if normal == ".." or normal.startswith("../") or normal == ".":
        raise RowRejected("image-outside-root",
                          f"image path {raw!r} leaves the images root {display_path(root)} "
                          "(pass --images-root with a folder that contains it)")
    return normal


def default_images_root(shard: Path) -> Path:
    """Images root of a phiv shard, by ``phiv-data validate``'s rule: the one its manifest
    records, else ``images/`` beside it."""
    from phiv_data.validate import ValidationOptions
    from phiv_data.validate.runner import resolve_inputs

    return resolve_inputs([shard], ValidationOptions())[0].images_root


# --- record fields ------------------------------------------------------------------------

def record_fields(row: dict[str, Any], known: set[str], default_id: str
                  ) -> tuple[str, str | None, dict[str, Any] | None, list[RowWarning]]:
    """``id``, ``source`` and ``meta`` of a foreign row, and the warnings about them.

    ``id`` may be a string or an integer (made a string); when absent, ``default_id``.
    ``meta`` may be an object or a JSON string holding one (as phiv exports it where a
    column must have one type). Top-level keys outside ``known`` are kept in
    ``meta["extra_fields"]`` when they are JSON values.

    Raises:
        RowRejected: when ``id``, ``source`` or ``meta`` has the wrong type.
    """
    warnings: list[RowWarning] = []
    record_id = row.get("id")
    if record_id is None:
        record_id = default_id
    elif isinstance(record_id, int) and not isinstance(record_id, bool):
        record_id = str(record_id)
    elif not isinstance(record_id, str) or not record_id:
        raise RowRejected("bad-id", f"id {record_id!r} is not a non-empty string or an integer")
    source = row.get("source")
    if source is not None and not isinstance(source, str):
        raise RowRejected("bad-field", f"source {source!r} is not a string")
    meta = row.get("meta")
    if isinstance(meta, str):
        try:
            meta = orjson.loads(meta)
        except orjson.JSONDecodeError:
            meta = {"text": meta}
            warnings.append(RowWarning("meta-not-json",
                                       "meta is a string that is not JSON: kept as meta.text"))
    if meta is not None and not isinstance(meta, dict):
        raise RowRejected("bad-field", f"meta {meta!r} is not an object")
    extra: dict[str, Any] = {}
    for key, value in row.items():
        if key in known or key in ("id", "source", "meta"):
            continue
        try:
            orjson.dumps(value)
        except TypeError:
            warnings.append(RowWarning("field-dropped",
                                       f"field {key!r} is not a JSON value and was not kept"))
            continue
        extra[key] = value
    if extra:
        meta = {**(meta or {}), "extra_fields": extra}
    return record_id, source, meta, warnings
