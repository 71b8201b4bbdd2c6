"""ShareGPT / LLaMA-Factory multimodal JSON: ``messages`` with roles, plus ``images``.

The layout LLaMA-Factory reads with ``"formatting": "sharegpt"`` (its ``mllm_demo.json``)::

    [{"messages": [{"role": "user", "content": "<image>Who are they?"},
                   {"role": "assistant", "content": "They're football players."}],
      "images": ["mllm_demo_data/1.jpg"]}]

Image paths are relative to the data file's folder (LLaMA-Factory's ``media_dir``
defaults to its ``dataset_dir``). Export writes ``OUT/<stem>.json`` and adds an entry named
``<stem>`` to ``OUT/dataset_info.json`` (merged with the entries already there).

phiv -> ShareGPT -> phiv is lossless: ``id`` and ``source`` are kept as extra keys and
``meta`` as a JSON string (LLaMA-Factory loads files through ``datasets``, which needs one
type per column); an unlabeled last turn is a trailing ``user`` message (LLaMA-Factory
skips such rows when training, the export report says how many). Importing also accepts
``conversations`` of ``from``/``value`` (classic ShareGPT), a top-level ``system`` string
and JSON Lines.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from phiv_data.errors import DataError, display_path
from phiv_data.interop.common import (
    ForeignRow,
    InteropReport,
    iter_json_rows,
    record_fields,
    write_json_array,
)
from phiv_data.interop.runner import ExportOptions, PathImages, PlacedImages
from phiv_data.interop.tags import Message, RowRejected, RowWarning, parse_messages, tagged_text
from phiv_data.schema import Record
from phiv_data.shards import atomic_write

NAME = "sharegpt"
DATASET_INFO = "dataset_info.json"
_KNOWN = {"messages", "conversations", "images", "system"}


def read_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """Rows of a ShareGPT JSON array (or JSON Lines) file with their line numbers."""
    return iter_json_rows(path)


def parse_row(row: dict[str, Any], *, default_id: str) -> ForeignRow:
    """Take a ShareGPT / LLaMA-Factory row apart (pure: no file access).

    Raises:
        RowRejected: when the messages or ``images`` are malformed.
    """
    if "messages" in row:
        messages = parse_messages(row["messages"], role_key="role", content_key="content",
                                  where="messages")
        field = "messages"
    else:
        messages = parse_messages(row.get("conversations"), role_key="from",
                                  content_key="value", where="conversations")
        field = "conversations"
    system = row.get("system")
    if system is not None and not isinstance(system, str):
        raise RowRejected("bad-field", f"system {system!r} is not a string")
    images = row.get("images")
    if images is None:
        images = []
    elif not isinstance(images, list):
        raise RowRejected("bad-image", f"images {images!r} is not a list of paths")
    record_id, source, meta, warnings = record_fields(row, _KNOWN, default_id)
    if system:
        meta = {**(meta or {}), "system": system}
        warnings.append(RowWarning("system-kept-in-meta", "the system prompt is kept in "
                                   "meta.system (phiv does not train on system prompts)"))
    return ForeignRow(messages, images, record_id, source, meta, field, warnings)


def record_to_row(record: Record, messages: list[Message], images: list[str]) -> dict[str, Any]:
    """A phiv record as a LLaMA-Factory row (pure)."""
    row: dict[str, Any] = {
        "id": record.id,
        "messages": [{"role": message.role, "content": tagged_text(message.parts)}
                     for message in messages],
        "images": images,
    }
    if record.source is not None:
        row["source"] = record.source
    if record.meta is not None:
        row["meta"] = orjson.dumps(record.meta).decode()
    return row


def import_images(*, path: Path, out: Path, root: Path, stem: str) -> PathImages:
    """Image paths are kept as they are, relative to ``root``."""
    return PathImages(root)


def export_images(*, root: Path, out: Path, mode: str) -> PlacedImages:
    """Images keep their phiv paths, placed under the output folder."""
    return PlacedImages(root, out, mode)


def dataset_info_entry(stem: str) -> dict[str, Any]:
    """LLaMA-Factory's ``dataset_info.json`` entry for ``<stem>.json``."""
    return {
        "file_name": f"{stem}.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content",
                 "user_tag": "user", "assistant_tag": "assistant", "system_tag": "system"},
    }


def write_rows(rows: Iterator[dict[str, Any]], out: Path, stem: str, options: ExportOptions,
               report: InteropReport) -> list[Path]:
    """Write ``OUT/<stem>.json`` and its entry in ``OUT/dataset_info.json``.

    Raises:
        DataError: when an existing ``dataset_info.json`` is not a JSON object.
    """
    target = out / f"{stem}.json"
    unlabeled = 0

    def counted() -> Iterator[dict[str, Any]]:
        nonlocal unlabeled
        for row in rows:
            unlabeled += row["messages"][-1]["role"] == "user"
            yield row

    with atomic_write(target, "wb") as handle:
        write_json_array(handle, counted())
    info_path = out / DATASET_INFO
    info: dict[str, Any] = {}
    if info_path.is_file():
        try:
            info = orjson.loads(info_path.read_bytes())
        except orjson.JSONDecodeError as error:
            raise DataError(f"{display_path(info_path)}: not valid JSON ({error})",
                            hint="fix or remove it; phiv adds its entry to it") from None
        if not isinstance(info, dict):
            raise DataError(f"{display_path(info_path)}: not a JSON object",
                            hint="fix or remove it; phiv adds its entry to it")
    info[stem] = dataset_info_entry(stem)
    with atomic_write(info_path, "wb") as handle:
        handle.write(orjson.dumps(info, option=orjson.OPT_INDENT_2) + b"\n")
    if unlabeled:
        report.notes.append(f"{unlabeled} unlabeled record(s) end with a user message: "
                            "LLaMA-Factory skips them for training (fine for prediction)")
    return [target, info_path]
