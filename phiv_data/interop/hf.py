"""Hugging Face ``datasets``: a ``Dataset`` with an ``Image`` sequence feature, local files only.

Layout phiv writes (and reads), the chat layout of Hugging Face processors and TRL::

    id: string   source: string   meta: string (JSON, or null)
    images: List(Image())                       # the image bytes, embedded
    image_paths: List(string)                   # their phiv paths (save_to_disk keeps
                                                # only file names in an Image's path)
    messages: List({role: string, content: List({type: string, text: string})})
      # [{"role": "user", "content": [{"type": "image", "text": null},
      #                               {"type": "text", "text": "What is shown?"}]},
      #  {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}]

saved as ``<stem>.parquet`` (default) or with ``save_to_disk`` into ``<stem>/``. Each
``{"type": "image"}`` part is one image slot, like an ``<image>`` tag.

Importing reads a parquet file or a ``save_to_disk`` folder (never a hub) and accepts
``messages`` whose content is a list of typed parts or a string with ``<image>`` tags,
``conversations`` of ``from``/``value`` (LLaVA), and images in ``images`` (a list) or
``image`` (one). Image bytes are written to ``OUT/images/<path>`` when ``image_paths`` (or
else the image's stored path) is a safe relative path, so phiv -> hf -> phiv keeps every
path; otherwise, or when that name already holds other bytes, to
``OUT/images/<stem>/<row>-<k>.<ext>``. Images stored as a path only are read
from the images root (the input's folder by default). Rows are numbered from 1 where other
formats give lines.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from phiv_data.errors import MediaError, PhivError, UsageError, display_path
from phiv_data.interop.common import ForeignRow, InteropReport, record_fields, relative_image_path
from phiv_data.interop.runner import ExportOptions
from phiv_data.interop.tags import IMAGE, Message, RowRejected, RowWarning, parse_messages
from phiv_data.schema import Record
from phiv_data.shards import atomic_write

NAME = "hf"
_KNOWN = {"messages", "conversations", "images", "image", "image_paths"}
_BATCH_ROWS = 64


def _require_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise UsageError("the hf format needs the `datasets` package",
                         hint='pip install "phiv[hf]"') from None
    return datasets


def features() -> Any:
    """The ``datasets.Features`` phiv writes."""
    _require_datasets()
    from datasets import Features, Image, List, Value

    part = {"type": Value("string"), "text": Value("string")}
    return Features({
        "id": Value("string"),
        "source": Value("string"),
        "messages": List({"role": Value("string"), "content": List(part)}),
        "images": List(Image()),
        "image_paths": List(Value("string")),
        "meta": Value("string"),
    })


def read_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """Rows (as stored: images as ``{"bytes", "path"}``) of a parquet file or a
    ``save_to_disk`` folder, numbered from 1.

    Raises:
        UsageError: when the path is neither, or is a ``DatasetDict`` folder.
    """
    if path.is_dir():
        batches = _disk_batches(path)
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS)
    else:
        raise UsageError(f"{display_path(path)}: not a parquet file or a save_to_disk folder",
                         hint="the hf format reads local files only")
    number = 0
    for batch in batches:
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _disk_batches(path: Path) -> Iterator[Any]:
    datasets = _require_datasets()
    if (path / "dataset_dict.json").is_file():
        splits = sorted(item.name for item in path.iterdir() if item.is_dir())
        raise UsageError(f"{display_path(path)} holds a DatasetDict ({', '.join(splits)})",
                         hint=f"import each split folder, e.g. {display_path(path / splits[0])}"
                         if splits else "import each split folder")
    if not (path / "state.json").is_file():
        raise UsageError(f"{display_path(path)}: not a folder written by save_to_disk "
                         "(no state.json)", hint="pass a parquet file or a save_to_disk folder")
    dataset = datasets.load_from_disk(str(path))
    yield from dataset.with_format("arrow").iter(batch_size=_BATCH_ROWS)


def parse_row(row: dict[str, Any], *, default_id: str) -> ForeignRow:
    """Take a stored row apart (pure: no file access).

    Raises:
        RowRejected: when the messages or images are malformed.
    """
    if row.get("messages") is not None:
        messages = parse_messages(row["messages"], role_key="role", content_key="content",
                                  where="messages")
        field = "messages"
    else:
        messages = parse_messages(row.get("conversations"), role_key="from",
                                  content_key="value", where="conversations")
        field = "conversations"
    if row.get("images") is not None:
        images = row["images"]
        if not isinstance(images, list):
            raise RowRejected("bad-image", "images is not a list")
    else:
        images = [row["image"]] if row.get("image") is not None else []
    names = row.get("image_paths")
    if isinstance(names, list) and len(names) == len(images):
        images = [{**image, "path": name} if isinstance(image, dict) and name else image
                  for image, name in zip(images, names, strict=True)]
    record_id, source, meta, warnings = record_fields(row, _KNOWN, default_id)
    return ForeignRow(messages, images, record_id, source, meta, field, warnings)


class StoredImages:
    """Import: image bytes (or files named by a path) written under ``OUT/images``."""

    def __init__(self, out: Path, root: Path, stem: str) -> None:
        self.root = out / "images"
        self.source_root = root
        self.stem = stem
        self._written: dict[str, str] = {}

    def resolve(self, raw: Any, row_index: int, position: int) -> tuple[str, list[RowWarning]]:
        if isinstance(raw, str):
            raw = {"bytes": None, "path": raw}
        if not isinstance(raw, dict):
            raise RowRejected("bad-image", f"image {raw!r} is neither bytes nor a path")
        data, stored_path = raw.get("bytes"), raw.get("path")
        if data is None:
            if stored_path is None:
                raise RowRejected("bad-image", "an image with neither bytes nor a path")
            relative = relative_image_path(stored_path, self.source_root)
            source = self.source_root / relative
            if not source.is_file():
                return relative, [RowWarning(
                    "missing-image", f"image {relative!r} has no bytes and is not found under "
                    f"{display_path(self.source_root)}")]
            data = source.read_bytes()
        return self._store(bytes(data), stored_path, row_index, position), []

    def _store(self, data: bytes, stored_path: str | None, row_index: int, position: int) -> str:
        digest = hashlib.sha256(data).hexdigest()
        name = None
        if stored_path:
            try:
                name = relative_image_path(stored_path, self.root)
            except RowRejected:
                name = None
        if name is None or not self._claim(name, digest, data):
            name = f"{self.stem}/{row_index + 1:010d}-{position}{_extension(data, stored_path)}"
            self._claim(name, digest, data, replace=True)
        return name

    def _claim(self, name: str, digest: str, data: bytes, replace: bool = False) -> bool:
        """Write ``data`` as ``name`` unless that name already holds other bytes."""
        known = self._written.get(name)
        if known is not None:
            return known == digest
        target = self.root / name
        if target.is_file() and not replace:
            if hashlib.sha256(target.read_bytes()).hexdigest() != digest:
                return False
        else:
            with atomic_write(target, "wb") as handle:
                handle.write(data)
        self._written[name] = digest
        return True


def _extension(data: bytes, stored_path: str | None) -> str:
    if stored_path and Path(stored_path).suffix:
        return Path(stored_path).suffix.lower()
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = (image.format or "").lower()
    except Exception:  # noqa: BLE001 - an undecodable image still gets a name; validate says why
        return ".bin"
    return {"jpeg": ".jpg", "": ".bin"}.get(kind, f".{kind}")


def import_images(*, path: Path, out: Path, root: Path, stem: str) -> StoredImages:
    """Image bytes are written under ``OUT/images``."""
    return StoredImages(out, root, stem)


def export_images(*, root: Path, out: Path, mode: str) -> Any:
    """Images are embedded: each becomes ``{"bytes": ..., "path": <phiv path>}``; a row
    with a missing image file is left out (reported as ``missing-image``)."""

    def embed(path: str) -> tuple[dict[str, Any], list[RowWarning]]:
        source = root / path
        if not source.is_file():
            raise RowRejected("missing-image", f"image {path!r} not found under "
                              f"{display_path(root)} (the hf format embeds image bytes)")
        return {"bytes": source.read_bytes(), "path": path}, []

    return embed


def record_to_row(record: Record, messages: list[Message], images: list[Any]) -> dict[str, Any]:
    """A phiv record as a row of phiv's Hugging Face layout (pure)."""
    return {
        "id": record.id,
        "source": record.source,
        "messages": [
            {"role": message.role,
             "content": [{"type": "image", "text": None} if part is IMAGE
                         else {"type": "text", "text": part} for part in message.parts]}
            for message in messages
        ],
        "images": images,
        "image_paths": [image["path"] for image in images],
        "meta": orjson.dumps(record.meta).decode() if record.meta is not None else None,
    }


def write_rows(rows: Iterator[dict[str, Any]], out: Path, stem: str, options: ExportOptions,
               report: InteropReport) -> list[Path]:
    """Write ``OUT/<stem>.parquet`` or ``OUT/<stem>/`` (``save_to_disk``).

    Raises:
        UsageError: when ``datasets`` is not installed.
    """
    datasets = _require_datasets()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".hf-export-", dir=out))
    bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        dataset = _build(datasets, rows, scratch)
        if options.hf_layout == "parquet":
            target = out / f"{stem}.parquet"
            with atomic_write(target, "wb") as handle:
                dataset.to_parquet(handle, batch_size=_BATCH_ROWS)
        else:
            target = out / stem
            staged = scratch / "dataset"
            dataset.save_to_disk(str(staged))
            if target.exists():
                shutil.rmtree(target)
            staged.rename(target)
        return [target]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if bars_were_on:
            datasets.enable_progress_bars()


def _build(datasets: Any, rows: Iterator[dict[str, Any]], scratch: Path) -> Any:
    first = next(rows, None)
    if first is None:
        return datasets.Dataset.from_list([], features=features())

    def generate() -> Iterator[dict[str, Any]]:
        yield first
        yield from rows

    try:
        # An explicit fingerprint: the generator closes over open files, which cannot be hashed.
        return datasets.Dataset.from_generator(generate, features=features(),
                                               cache_dir=str(scratch / "cache"),
                                               fingerprint=f"phiv-export-{id(rows)}")
    except datasets.exceptions.DatasetGenerationError as error:
        if isinstance(error.__cause__, PhivError):
            raise error.__cause__ from None
        raise MediaError(f"writing the Hugging Face dataset failed: {error.__cause__ or error}",
                         hint="rerun with PHIV_DEBUG=1 for the traceback") from error
