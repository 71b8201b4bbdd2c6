"""Reading public datasets' native files and their images (DocVQA, NLVR2, Hateful Memes).

What the three dataset modules share and what is not specific to any one of them: JSON Lines
read byte-exactly with line numbers, JSON documents, Hugging Face parquet copies read without
a hub or a cache (image cells fetched later, one row group at a time, by the worker that needs
them), a by-name index of the files under a dataset folder, prompt templates checked before
anything runs, and images identified by their content (a ``.png`` holding a JPEG gets a
``.jpg`` name) and decoded once per worker before they are written.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import string
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from phiv_data.convert.framework import MediaFile
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


def check_option(check: str) -> str:
    """``check`` when it is one of ``CHECKS``.

    Raises:
        UsageError: otherwise.
    """
    if check not in CHECKS:
        raise UsageError(f"--check-images {check!r}: expected one of {', '.join(CHECKS)}")
    return check


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
    splitters break on. A ``\\r\\n`` ending is accepted.
    """
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw[:-1] if raw.endswith(b"\n") else raw
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
        document = orjson.loads(path.read_bytes())
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
        import pyarrow.parquet as parquet
    except ImportError:
        raise UsageError("reading parquet copies needs pyarrow",
                         hint='install it with `pip install "phiv[hf]"`') from None
    try:
        return parquet.ParquetFile(path)
    except Exception as error:  # pyarrow raises several unrelated types for a bad file
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


def read_parquet_rows(path: Path, shown: str) -> tuple[list[str], Iterator[tuple[NativeRow, int, int]]]:
    """The rows of a parquet file (a Hugging Face copy), without their image columns.

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

    def rows() -> Iterator[tuple[NativeRow, int, int]]:
        number = 0
        for group in range(source.metadata.num_row_groups):
            table = source.read_row_group(group, columns=other_columns)
            for position, row in enumerate(table.to_pylist()):
                number += 1
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


# --- images ---------------------------------------------------------------------------------

_EXTENSIONS = {"PNG": (".png",), "JPEG": (".jpg", ".jpeg"), "GIF": (".gif",),
               "WEBP": (".webp",), "BMP": (".bmp",), "TIFF": (".tif", ".tiff")}


@dataclass(frozen=True)
class ImageSource:
    """An image a row refers to: a file, or a parquet cell.

    ``stem`` and ``suffix`` name the output file (the suffix is corrected when the content
    says otherwise); ``shown`` is how reports name it.
    """

    stem: str
    suffix: str
    shown: str
    path: str | None = None
    cell: ParquetCell | None = None


CHECKS = ("decode", "verify")
"""How images are checked: ``decode`` decodes every pixel (what ``phiv-data validate
--check-images decode`` does); ``verify`` checks a PNG's structure and the CRC of every chunk
without inflating it (about 20 times faster on document pages) and decodes other formats."""


def _decode(handle: Any, check: str) -> tuple[str | None, str | None]:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning on large pages
            with Image.open(handle) as image:
                image_format = image.format or ""
                if check == "verify" and image_format == "PNG":
                    image.verify()
                else:
                    image.load()
    except UnidentifiedImageError:
        return None, "not an image (unknown content)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return None, f"cannot be decoded ({error})"
    if image_format not in _EXTENSIONS:
        return None, f"unsupported image format {image_format!r}"
    return image_format, None


@functools.lru_cache(maxsize=4096)
def _decode_file(path: str, size: int, mtime_ns: int, check: str
                 ) -> tuple[str | None, str | None]:
    # Cached per worker: one page shared by many questions is decoded once per worker.
    return _decode(path, check)


_BYTES_RESULTS: dict[bytes, tuple[str | None, str | None]] = {}


def _decode_bytes(data: bytes, check: str) -> tuple[str | None, str | None]:
    # Hugging Face copies repeat a page's bytes in every row of its questions: decode each
    # distinct content once per worker (keyed by a digest, so no bytes are kept).
    digest = hashlib.blake2b(data, digest_size=16, person=check.encode()[:16]).digest()
    result = _BYTES_RESULTS.get(digest)
    if result is None:
        if len(_BYTES_RESULTS) >= 65536:
            _BYTES_RESULTS.clear()
        result = _BYTES_RESULTS[digest] = _decode(io.BytesIO(data), check)
    return result


def output_name(stem: str, source_suffix: str, image_format: str) -> str:
    """``stem`` plus the source's extension if it matches the content, else the format's
    usual one (``img0.png`` holding a JPEG becomes ``img0.jpg``)."""
    allowed = _EXTENSIONS[image_format]
    return stem + (source_suffix if source_suffix.lower() in allowed else allowed[0])


def image_media(source: ImageSource, folder: str, *, link: bool, check: str = "decode"
                ) -> tuple[MediaFile, str | None]:
    """Check an image by decoding it and describe the file to write for it.

    Args:
        source: the file or parquet cell.
        folder: output folder under the images root (``"val"``, ``"img"``).
        link: hard-link instead of copying, where the filesystem allows.
        check: ``decode`` or ``verify`` (see ``CHECKS``).

    Returns:
        ``(media, note)``: the file to write (path relative to the images root), and a
        note when its extension was corrected.

    Raises:
        RowProblem: ``missing-image`` or ``unreadable-image``, naming the image.
    """
    data: bytes | None = None
    stem, suffix = source.stem, source.suffix
    if source.cell is not None:
        value = read_cell(source.cell)
        cell_path = value.get("path") if isinstance(value, Mapping) else None
        data = value.get("bytes") if isinstance(value, Mapping) else value
        if not isinstance(data, bytes) or not data:
            raise RowProblem(f"{source.shown}: the image cell holds no bytes", "missing-image")
        if isinstance(cell_path, str) and cell_path.strip():
            # the file name the Hugging Face copy kept (documents/ab_1.png -> ab_1)
            name = Path(cell_path.replace("\\", "/")).name
            stem, suffix = Path(name).stem, Path(name).suffix
        image_format, problem = _decode_bytes(data, check)
    else:
        assert source.path is not None
        try:
            status = os.stat(source.path)
        except OSError as error:
            raise RowProblem(f"{source.shown}: {error.strerror}", "missing-image") from None
        image_format, problem = _decode_file(source.path, status.st_size, status.st_mtime_ns,
                                             check)
    if image_format is None:
        raise RowProblem(f"{source.shown}: {problem}", "unreadable-image")
    path = f"{folder}/{output_name(stem, suffix, image_format)}"
    note = None
    if suffix and suffix.lower() not in _EXTENSIONS[image_format]:
        note = f"{source.shown} holds a {image_format} image: written as {path}"
    if data is not None:
        return MediaFile(path, data=data), note
    return MediaFile(path, source=source.path, link=link), note


def clear_caches() -> None:
    """Forget the images and parquet row groups this process has read (for benchmarks)."""
    _decode_file.cache_clear()
    _BYTES_RESULTS.clear()
    _row_group_column.cache_clear()
