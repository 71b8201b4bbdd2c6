"""Reading public datasets' native files (DocVQA, NLVR2, Hateful Memes).

What the three dataset modules share and what is not specific to any one of them: JSON Lines
read byte-exactly with line numbers, JSON documents, Hugging Face parquet copies read without
a hub or a cache (image cells fetched later, one row group at a time, by the worker that needs
them), a by-name index of the files under a dataset folder, and prompt templates and texts
checked for special-token strings. Images are in :mod:`phiv_data.convert.native_images`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from phiv_data.errors import DataError, UsageError
from phiv_data.phi3v import find_special_text

# --- problems, prompts, text ----------------------------------------------------------------


class RowProblem(ValueError):
    """A native row that cannot become a record. It is reported with the row's file and
    line under ``reason`` (a short code), counted, and fails the run under ``--strict``."""

    def __init__(self, detail: str, reason: str = "invalid-row") -> None:
        super().__init__(detail)
        self.detail = detail
        self.reason = reason


def check_template(template: str, fields: tuple[str, ...], option: str = "--prompt-template"
                   ) -> str:
    """Check a prompt template before any row is read.

    Raises:
        UsageError: when it does not use exactly ``fields``, is not a valid ``str.format``
            template, or holds a special-token string.
    """
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise UsageError(f"{option}: not a valid template ({error})",
                         hint="write literal braces as {{ and }}") from None
    if used != set(fields):
        expected = ", ".join("{" + name + "}" for name in fields)
        raise UsageError(f"{option} {template!r} must use exactly the field(s) {expected}",
                         hint=f"for example '{{{fields[0]}}}'")
    special = find_special_text(template)
    if special:
        raise UsageError(f"{option} holds the special-token string {special[0]!r}",
                         hint="Phi-3.5-vision would read it as a control token or image "
                              "placeholder; remove it (images are placed automatically)")
    return template


def clean_text(text: Any, what: str, *, allow_empty: bool = False) -> str:
    """``text`` when it is a string (non-empty unless ``allow_empty``) free of special-token
    strings such as ``<s>`` or ``<|image_1|>``.

    Raises:
        RowProblem: ``invalid-row`` (missing, not text, empty) or ``special-token-text``.
    """
    if not isinstance(text, str):
        raise RowProblem(f"{what} is {'missing' if text is None else type(text).__name__}, "
                         "not text")
    if not allow_empty and not text.strip():
        raise RowProblem(f"{what} is empty")
    special = find_special_text(text)
    if special:
        raise RowProblem(f"{what} holds the special-token string {special[0]!r}, which "
                         "Phi-3.5-vision would read as a control token", "special-token-text")
    return text


# --- rows -----------------------------------------------------------------------------------

UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class NativeRow:
    """One row of a native file and where it came from.

    ``line`` is the 1-based line of a JSON Lines file; ``field`` locates a row inside a JSON
    document (``data[17]``) or a parquet file (``row 17``). ``problem`` is set (and ``data``
    is ``None``) when the row could not be parsed at all.
    """

    file: str
    line: int | None
    field: str | None
    data: dict[str, Any] | None
    problem: str | None = None

    @property
    def where(self) -> str:
        """``file:line`` or ``file: data[17]``, as reports show it."""
        text = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{text}: {self.field}" if self.field else text


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(char) <= 0xDFFF for char in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    return False


def parse_json_line(raw: bytes) -> tuple[Any, str | None]:
    """Parse one JSON Lines line; return ``(value, problem)``.

    orjson first (fast, strict); the standard library as a fallback so that raw control
    characters inside strings, which some releases contain, are accepted and kept exactly.
    Escaped lone surrogates cannot be written as UTF-8 and are reported.
    """
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError:
        pass
    try:
        value = json.loads(raw.decode("utf-8"), strict=False)
    except UnicodeDecodeError as error:
        return None, f"not UTF-8 ({error.reason} at byte {error.start})"
    except json.JSONDecodeError as error:
        return None, f"not valid JSON ({error.msg} at column {error.colno})"
    if _has_lone_surrogate(value):
        return None, "holds an escaped lone surrogate (\\ud800-\\udfff): not valid Unicode text"
    return value, None


def read_json_lines(path: Path, shown: str) -> Iterator[NativeRow]:
    """Every non-blank line of a JSON Lines file as a ``NativeRow`` (1-based line numbers).

    Lines are split on ``\\n`` only: text may hold U+2028, U+0085 or a lone ``\\r`` that other
    splitters break on. A ``\\r\\n`` ending and a UTF-8 byte order mark (files saved by some
    Windows editors) are accepted.
    """
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw[:-1] if raw.endswith(b"\n") else raw
            if number == 1:
                line = line.removeprefix(UTF8_BOM)
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line.strip():
                continue
            value, problem = parse_json_line(line)
            if problem is None and not isinstance(value, dict):
                value, problem = None, f"expected a JSON object, found {type(value).__name__}"
            yield NativeRow(shown, number, None, value, problem)


def read_json_items(path: Path, shown: str, *, list_key: str = "data"
                    ) -> tuple[dict[str, Any], list[NativeRow]]:
    """A JSON document holding a list of row objects, bare or under ``list_key``.

    Returns:
        ``(header, rows)``: the wrapper's other keys (empty for a bare list) and the rows,
        located as ``data[i]`` (``[i]`` for a bare list).

    Raises:
        DataError: when the file is not JSON or holds neither shape.
    """
    try:
        document = orjson.loads(path.read_bytes().removeprefix(UTF8_BOM))
    except orjson.JSONDecodeError as error:
        raise DataError(f"{shown}: not valid JSON ({error})",
                        hint="the annotation file is damaged; download it again") from None
    if isinstance(document, dict) and isinstance(document.get(list_key), list):
        header = {key: value for key, value in document.items() if key != list_key}
        items, prefix = document[list_key], list_key
    elif isinstance(document, list):
        header, items, prefix = {}, document, ""
    else:
        raise DataError(f"{shown}: expected a list of items or an object with a "
                        f"{list_key!r} list", hint="point --src at the dataset as distributed")
    rows = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            rows.append(NativeRow(shown, None, f"{prefix}[{index}]", item))
        else:
            rows.append(NativeRow(shown, None, f"{prefix}[{index}]", None,
                                  f"expected a JSON object, found {type(item).__name__}"))
    return header, rows


# --- parquet --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParquetCell:
    """Where an image cell lies in a parquet file: read by the worker that needs it."""

    file: str
    row_group: int
    row: int
    column: str
    item: int | None = None  # position inside a list column


def _parquet_file(path: Path, shown: str) -> Any:
    try:
        from pyarrow import parquet
    except ImportError:
        raise UsageError("reading parquet copies needs pyarrow",
                         hint='install it with `pip install "phiv[hf]"`') from None
    try:
        return parquet.ParquetFile(path)
    except Exception as error:  # noqa: BLE001 - pyarrow raises unrelated types for a bad file
        raise DataError(f"{shown}: not a readable parquet file ({error})",
                        hint="download the file again") from None


def is_image_type(arrow_type: Any) -> bool:
    """A ``datasets`` Image column (``struct<bytes, path>``), raw bytes, or a list of them."""
    import pyarrow as pa

    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return is_image_type(arrow_type.value_type)
    if pa.types.is_struct(arrow_type):
        return any(child.name == "bytes" for child in arrow_type)
    return bool(pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type))


def class_label_names(schema: Any) -> dict[str, list[str]]:
    """Column -> names of each ``datasets`` ClassLabel column, from the feature metadata
    that ``datasets`` stores in the parquet schema (empty when there is none)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        features = orjson.loads(raw)["info"]["features"] if raw else {}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return {}
    return {name: list(feature["names"]) for name, feature in features.items()
            if isinstance(feature, dict) and feature.get("_type") == "ClassLabel"
            and isinstance(feature.get("names"), list)}


def read_parquet_rows(path: Path, shown: str
                      ) -> tuple[list[str], Iterator[tuple[NativeRow, int, int]]]:
    """The rows of a parquet file (a Hugging Face copy), without their image columns.

    ``datasets`` ClassLabel columns hold integers whose meaning is the feature's list of
    names (NLVR2's label may be ``["False", "True"]`` or the other way round): each is
    replaced by its name, so rows read as the official files do.

    Returns:
        ``(image_columns, rows)``: the names of the image columns, and for every row its
        ``NativeRow`` (located as ``row N``), row group and position in the group.

    Raises:
        UsageError: when pyarrow (installed with ``datasets``) is missing.
        DataError: when the file is not parquet.
    """
    source = _parquet_file(path, shown)
    schema = source.schema_arrow
    image_columns = [field.name for field in schema if is_image_type(field.type)]
    other_columns = [field.name for field in schema if field.name not in image_columns]
    labels = class_label_names(schema)

    def rows() -> Iterator[tuple[NativeRow, int, int]]:
        number = 0
        for group in range(source.metadata.num_row_groups):
            table = source.read_row_group(group, columns=other_columns)
            for position, row in enumerate(table.to_pylist()):
                number += 1
                for column, names in labels.items():
                    value = row.get(column)
                    if isinstance(value, int) and 0 <= value < len(names):
                        row[column] = names[value]
                yield NativeRow(shown, None, f"row {number}", row), group, position

    return image_columns, rows()


@functools.lru_cache(maxsize=2)
def _row_group_column(file: str, row_group: int, column: str) -> list[Any]:
    # Items reach workers in plan order, so consecutive cells come from the same row group.
    source = _parquet_file(Path(file), file)
    return source.read_row_group(row_group, columns=[column]).column(0).to_pylist()


def read_cell(cell: ParquetCell) -> Any:
    """The value of an image cell (``{"bytes", "path"}`` or bytes)."""
    value = _row_group_column(cell.file, cell.row_group, cell.column)[cell.row]
    if cell.item is not None:
        if not isinstance(value, list) or len(value) <= cell.item:
            return None
        value = value[cell.item]
    return value


def row_group_cache_clear() -> None:
    """Forget the parquet row groups this process has read."""
    _row_group_column.cache_clear()


def parquet_split(path: Path) -> str:
    """The split of a Hugging Face parquet file: ``validation-00000-of-00002.parquet`` ->
    ``validation``; ``train/0000.parquet`` -> ``train`` (the folder names it)."""
    match = re.match(r"^(?P<split>[A-Za-z][A-Za-z0-9_.]*?)(?:-\d+-of-\d+)?$", path.stem)
    return match.group("split") if match else path.parent.name


# --- files ----------------------------------------------------------------------------------


class FileIndex:
    """Image files under a folder by name, for an image that is not where its row says.

    Built on first use (one walk of the tree); hidden files and folders are ignored.
    """

    def __init__(self, root: Path, suffixes: tuple[str, ...] = (".png", ".jpg", ".jpeg")
                 ) -> None:
        self.root = root
        self.suffixes = suffixes
        self._by_name: dict[str, list[Path]] | None = None

    def _build(self) -> dict[str, list[Path]]:
        by_name: dict[str, list[Path]] = {}
        for directory, folders, files in os.walk(self.root):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in files:
                if not name.startswith(".") and name.lower().endswith(self.suffixes):
                    by_name.setdefault(name, []).append(Path(directory) / name)
        for paths in by_name.values():
            paths.sort()
        return by_name

    def find(self, name: str, near: Path | None = None) -> Path | None:
        """The file called ``name``; the first one under ``near`` when there are several."""
        if self._by_name is None:
            self._by_name = self._build()
        candidates = self._by_name.get(name, [])
        if near is not None:
            for candidate in candidates:
                if candidate.is_relative_to(near):
                    return candidate
        return candidates[0] if candidates else None


def source_path(path: Path, src: Path) -> str:
    """``path`` as reports show it: relative to ``--src`` (the same wherever the command
    runs), or as given when it lies outside."""
    try:
        return path.relative_to(src).as_posix()
    except ValueError:
        return str(path)


def resolve_image(relative: str, base: Path, index: FileIndex, near: Path | None = None
                  ) -> Path | None:
    """The image a row names: ``base/relative`` if it exists, else found by file name."""
    direct = base / relative
    if direct.is_file():
        return direct
    return index.find(Path(relative.replace("\\", "/")).name, near)
