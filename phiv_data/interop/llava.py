"""LLaVA-style JSON: ``conversations`` of ``from``/``value`` with ``<image>`` tags.

The layout LLaVA's training code reads (``--data_path`` a JSON array, ``--image_folder``
the folder the ``image`` paths are relative to)::

    [{"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
      "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus?"},
                        {"from": "gpt", "value": "The bus is white and red."}]}]

``image`` is one path or a list of paths (several images); a row without images has no
``image``. phiv -> LLaVA -> phiv is lossless: each turn's images become ``<image>`` lines at
the start of its ``human`` message, an unlabeled last turn is a trailing ``human`` message,
and ``source`` and ``meta`` are kept as extra keys (LLaVA ignores them). Importing also
accepts JSON Lines, ``user``/``assistant`` roles and a leading ``system`` message.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from phiv_data.interop.common import (
    ForeignRow,
    InteropReport,
    iter_json_rows,
    record_fields,
    write_json_array,
)
from phiv_data.interop.runner import ExportOptions, PathImages, PlacedImages
from phiv_data.interop.tags import Message, RowRejected, leading_tags_text, parse_messages
from phiv_data.schema import Record
from phiv_data.shards import atomic_write

NAME = "llava"
_KNOWN = {"image", "conversations"}
_ROLE_NAMES = {"user": "human", "assistant": "gpt"}


def read_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """Rows of a LLaVA JSON array (or JSON Lines) file with their line numbers."""
    return iter_json_rows(path)


def parse_row(row: dict[str, Any], *, default_id: str) -> ForeignRow:
    """Take a LLaVA row apart (pure: no file access).

    Raises:
        RowRejected: when ``conversations`` or ``image`` is malformed.
    """
    messages = parse_messages(row.get("conversations"), role_key="from", content_key="value",
                              where="conversations")
    images = row.get("image")
    if images is None:
        images = []
    elif isinstance(images, str):
        images = [images]
    elif not isinstance(images, list):
        raise RowRejected("bad-image", f"image {images!r} is neither a path nor a list of paths")
    record_id, source, meta, warnings = record_fields(row, _KNOWN, default_id)
    return ForeignRow(messages, images, record_id, source, meta, "conversations", warnings)


def record_to_row(record: Record, messages: list[Message], images: list[str]) -> dict[str, Any]:
    """A phiv record as a LLaVA row (pure)."""
    row: dict[str, Any] = {"id": record.id}
    if len(images) == 1:
        row["image"] = images[0]
    elif images:
        row["image"] = images
    row["conversations"] = [
        {"from": _ROLE_NAMES[message.role],
         "value": leading_tags_text(message) if message.role == "user" else message.text}
        for message in messages
    ]
    if record.source is not None:
        row["source"] = record.source
    if record.meta is not None:
        row["meta"] = record.meta
    return row


def import_images(*, path: Path, out: Path, root: Path, stem: str) -> PathImages:
    """Image paths are kept as they are, relative to ``root``."""
    return PathImages(root)


def export_images(*, root: Path, out: Path, mode: str) -> PlacedImages:
    """Images keep their phiv paths, placed under the output folder."""
    return PlacedImages(root, out, mode)


def write_rows(rows: Iterator[dict[str, Any]], out: Path, stem: str, options: ExportOptions,
               report: InteropReport) -> list[Path]:
    """Write ``OUT/<stem>.json`` (a JSON array, one row per line)."""
    target = out / f"{stem}.json"
    with atomic_write(target, "wb") as handle:
        write_json_array(handle, rows)
    if options.images == "none":
        report.notes.append("image paths are relative to the phiv images root: pass it as "
                            "LLaVA's --image_folder")
    else:
        report.notes.append(f"images are under {out}: pass it as LLaVA's --image_folder")
    return [target]
