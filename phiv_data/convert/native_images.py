"""Images of public datasets' rows: identified by content, checked, described for writing.

A ``.png`` holding a JPEG gets a ``.jpg`` name (its bytes are copied unchanged). Each image is
checked before it is written (decoded, or its PNG chunks verified), so a missing or
unreadable image is reported with its row instead of reaching training. The result is
remembered per worker, and an image already in the output (so checked by whichever worker
wrote it, or by an earlier run) is not decoded again.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phiv_data.convert.framework import MediaFile
from phiv_data.convert.native_io import ParquetCell, RowProblem, read_cell, row_group_cache_clear
from phiv_data.errors import UsageError

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


def check_option(check: str) -> str:
    """``check`` when it is one of ``CHECKS``.

    Raises:
        UsageError: otherwise.
    """
    if check not in CHECKS:
        raise UsageError(f"--check-images {check!r}: expected one of {', '.join(CHECKS)}")
    return check


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


def _identify(handle: Any) -> str | None:
    # The format from the header alone (no pixels decoded); None when it is not one we write.
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(handle) as image:
                return image.format if image.format in _EXTENSIONS else None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError):
        return None


def _checked_before(handle: Any, size: int, stem: str, suffix: str, folder: str,
                    images_root: Path) -> str | None:
    """The image's format if it is already in the output with its size: the framework writes
    an image only after the item that named it was checked, so another worker (or an
    earlier run) has checked it and it need not be decoded again."""
    image_format = _identify(handle)
    if image_format is None:
        return None
    written = images_root / folder / output_name(stem, suffix, image_format)
    try:
        return image_format if written.stat().st_size == size else None
    except OSError:
        return None


def output_name(stem: str, source_suffix: str, image_format: str) -> str:
    """``stem`` plus the source's extension if it matches the content, else the format's
    usual one (``img0.png`` holding a JPEG becomes ``img0.jpg``)."""
    allowed = _EXTENSIONS[image_format]
    return stem + (source_suffix if source_suffix.lower() in allowed else allowed[0])


def image_media(source: ImageSource, folder: str, *, link: bool, check: str = "decode",
                images_root: str | Path | None = None) -> tuple[MediaFile, str | None]:
    """Check an image by decoding it and describe the file to write for it.

    Args:
        source: the file or parquet cell.
        folder: output folder under the images root (``"val"``, ``"img"``).
        link: hard-link instead of copying, where the filesystem allows.
        check: ``decode`` or ``verify`` (see ``CHECKS``).
        images_root: the output's images root, if known: an image already written there
            (so already checked; a DocVQA page shared by many questions) is not decoded
            again, whichever worker checked it.

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
        image_format = problem = None
        if images_root is not None:
            image_format = _checked_before(io.BytesIO(data), len(data), stem, suffix, folder,
                                           Path(images_root))
        if image_format is None:
            image_format, problem = _decode_bytes(data, check)
    else:
        assert source.path is not None
        try:
            status = os.stat(source.path)
        except OSError as error:
            raise RowProblem(f"{source.shown}: {error.strerror}", "missing-image") from None
        image_format = problem = None
        if images_root is not None:
            image_format = _checked_before(source.path, status.st_size, stem, suffix, folder,
                                           Path(images_root))
        if image_format is None:
            image_format, problem = _decode_file(source.path, status.st_size,
                                                 status.st_mtime_ns, check)
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
    row_group_cache_clear()
