"""Reading and writing JSONL shards and their manifest, never leaving a half-written file.

Writes go to a temporary file in the destination directory, are flushed and fsynced, then
renamed over the destination (``os.replace`` is atomic on POSIX), and the directory entry
is fsynced too. A crash at any moment leaves either the old file or the new one, plus at
most a ``.*.tmp`` file that the next writer of that path removes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec
import orjson

from phiv_data.errors import DataError, Location, ManifestError, display_path
from phiv_data.manifest import MANIFEST_NAME, Manifest, Shard

if TYPE_CHECKING:
    from pydantic import ValidationError

    from phiv_data.schema import Record


@functools.cache
def pydantic_schema() -> tuple[type[Record], type[ValidationError]]:
    """The record model and pydantic's error, imported when a record function first needs
    them: reading and writing manifests (what `phiv-data validate` and the trainer's gate
    do) never does. Cached because an import statement costs about 1 us, a third of
    serialising a record."""
    from pydantic import ValidationError

    from phiv_data.schema import Record

    return Record, ValidationError


def _as_record(record: Record | dict[str, Any]) -> Record:
    """``record`` itself, or the dict validated as a ``Record``."""
    model = pydantic_schema()[0]
    return record if isinstance(record, model) else model.model_validate(record)


TEMP_SUFFIX = ".tmp"
_HASH_CHUNK = 1 << 20


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: str | Path, name: str | None = None) -> int:
    """Delete leftovers of interrupted atomic writes in ``directory``.

    Args:
        directory: where to look.
        name: only the temporaries of this destination file name; all when ``None``.

    Returns:
        How many files were removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    prefix = f".{name}." if name else "."
    removed = 0
    for candidate in directory.iterdir():
        if candidate.name.startswith(prefix) and candidate.name.endswith(TEMP_SUFFIX):
            candidate.unlink(missing_ok=True)
            removed += 1
    return removed


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` only if the block completes.

    Args:
        path: the destination; its directory is created when missing.
        mode: ``"wb"`` or ``"w"`` (text mode writes UTF-8 with ``\\n`` line endings).

    Yields:
        The open temporary file.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write supports modes 'wb' and 'w', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    temp = Path(temp_name)
    try:
        if mode == "wb":
            handle: IO[Any] = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
        _fsync_directory(path.parent)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def iter_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_bytes)`` for every line of a file, 1-based, lazily.

    The line terminator (``\\n``) is stripped; a ``\\r`` before it is kept so that
    validators can report CRLF files.
    """
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            yield number, line[:-1] if line.endswith(b"\n") else line


def _first_error_field(error: ValidationError) -> str | None:
    details = error.errors()
    if not details:
        return None
    return format_field_path(details[0]["loc"])


def format_field_path(loc: Iterable[str | int]) -> str:
    """Turn a pydantic ``loc`` tuple into ``conversations[0].images[2]``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def parse_record(line: bytes, *, file: str | None = None, line_number: int | None = None) -> Record:
    """Parse and validate one JSONL line.

    Raises:
        DataError: with ``file:line: field`` and pydantic's message, when the line is not
            a valid record.
    """
    model, validation_error = pydantic_schema()
    try:
        return model.model_validate_json(line)
    except validation_error as error:
        first = error.errors()[0]
        location = Location(file, line_number, _first_error_field(error))
        more = f" (and {error.error_count() - 1} more problems)" if error.error_count() > 1 else ""
        raise DataError(
            f"{first['msg']}{more}",
            location=location,
            hint="run `phiv-data validate` on the file for a full report",
        ) from None


def read_records(path: str | Path) -> Iterator[tuple[int, Record]]:
    """Yield ``(line_number, Record)`` from a JSONL shard, lazily.

    Blank lines are skipped. Use ``phiv-data validate`` (``phiv_data.validate``) to collect
    every problem of a file; this reader stops at the first bad line.

    Raises:
        DataError: on the first line that is not a valid record, naming file and line.
    """
    shown = display_path(path)
    for number, raw in iter_lines(path):
        if not raw.strip():
            continue
        yield number, parse_record(raw, file=shown, line_number=number)


def record_to_line(record: Record | dict[str, Any]) -> bytes:
    """Serialise one record as a JSONL line (UTF-8, compact, ending in ``\\n``).

    A dict is validated as a ``Record`` first, so nothing invalid is ever written.
    """
    return orjson.dumps(_as_record(record).to_json_dict()) + b"\n"


class ShardWriter:
    """Writes one JSONL shard atomically and returns its manifest entry.

    Use as a context manager; on an exception inside the block nothing is written::

        with ShardWriter(out / "ucf101_train.jsonl", split="train") as writer:
            for record in records:
                writer.write(record)
        entry = writer.shard
    """

    def __init__(self, path: str | Path, *, split: str | None = None,
                 images_root: str = "images", manifest_dir: str | Path | None = None) -> None:
        self.path = Path(path)
        self.split = split
        self.images_root = images_root
        self.manifest_dir = Path(manifest_dir) if manifest_dir is not None else self.path.parent
        self.shard: Shard | None = None
        self._digest = hashlib.sha256()
        self._size = 0
        self._records = 0
        self._images = 0
        self._unlabeled = 0
        self._context: Any = None
        self._handle: IO[bytes] | None = None

    def __enter__(self) -> ShardWriter:
        self._context = atomic_write(self.path, "wb")
        self._handle = self._context.__enter__()
        return self

    def write(self, record: Record | dict[str, Any]) -> None:
        """Append one record (validated first when given as a dict)."""
        if self._handle is None:
            raise RuntimeError("ShardWriter.write called outside its `with` block")
        record = _as_record(record)
        line = record_to_line(record)
        self._handle.write(line)
        self._digest.update(line)
        self._size += len(line)
        self._records += 1
        self._images += len(record.images)
        self._unlabeled += not record.labeled

    def write_all(self, records: Iterable[Record | dict[str, Any]]) -> None:
        """Append every record of an iterable."""
        for record in records:
            self.write(record)

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> bool:
        finished = self._context.__exit__(exc_type, exc, traceback)
        self._handle = None
        if exc_type is None:
            self.shard = Shard(
                file=relative_posix(self.path, self.manifest_dir),
                split=self.split,
                images_root=self.images_root,
                sha256=self._digest.hexdigest(),
                size_bytes=self._size,
                records=self._records,
                images=self._images,
                unlabeled=self._unlabeled,
            )
        return bool(finished)


def write_records(path: str | Path, records: Iterable[Record | dict[str, Any]], *,
                  split: str | None = None, images_root: str = "images") -> Shard:
    """Write records to a JSONL shard atomically; return its manifest entry."""
    with ShardWriter(path, split=split, images_root=images_root) as writer:
        writer.write_all(records)
    assert writer.shard is not None
    return writer.shard


def describe_shard(path: str | Path, *, manifest_dir: str | Path | None = None,
                   split: str | None = None, images_root: str = "images") -> Shard:
    """Build the manifest entry of an existing shard (hash, line, image counts).

    Lines that are not valid records count as records but contribute no images.
    """
    model, validation_error = pydantic_schema()
    path = Path(path)
    manifest_dir = Path(manifest_dir) if manifest_dir is not None else path.parent
    digest = hashlib.sha256()
    size = records = images = unlabeled = 0
    for _, raw in iter_lines(path):
        digest.update(raw + b"\n")
        size += len(raw) + 1
        if not raw.strip():
            continue
        records += 1
        try:
            record = model.model_validate_json(raw)
        except validation_error:
            continue
        images += len(record.images)
        unlabeled += not record.labeled
    actual_size = path.stat().st_size
    sha = digest.hexdigest() if actual_size == size else sha256_file(path)
    return Shard(file=relative_posix(path, manifest_dir), split=split,
                 images_root=images_root, sha256=sha, size_bytes=actual_size,
                 records=records, images=images, unlabeled=unlabeled)


def relative_posix(path: str | Path, start: str | Path) -> str:
    """``path`` relative to ``start`` with ``/`` separators, or absolute if outside it."""
    path, start = Path(path).resolve(), Path(start).resolve()
    try:
        return path.relative_to(start).as_posix()
    except ValueError:
        return path.as_posix()


_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}


def infer_split(path: str | Path) -> str | None:
    """Guess a shard's split from its file name (``ucf101_train.jsonl`` -> ``train``,
    ``dev_seen.jsonl`` -> ``val``); ``None`` when nothing matches."""
    words = re.split(r"[^a-z0-9]+", Path(path).stem.lower())
    for word in reversed(words):
        if word in _SPLIT_ALIASES:
            return _SPLIT_ALIASES[word]
    return None


def manifest_path(directory_or_file: str | Path) -> Path:
    """The manifest of a dataset directory (or the path itself if it is a manifest)."""
    path = Path(directory_or_file)
    return path if path.name == MANIFEST_NAME or path.suffix == ".json" else path / MANIFEST_NAME


_decode_manifest = msgspec.json.Decoder(Manifest).decode


def _manifest_problem(error: msgspec.DecodeError) -> str:
    """msgspec's message with its location (``- at `$.shards[0].records```) put first."""
    message, separator, where = str(error).rpartition(" - at `$")
    if not separator:
        return str(error)
    return f"{where.rstrip('`').lstrip('.')}: {message}"


def load_manifest(directory_or_file: str | Path) -> Manifest:
    """Read a dataset directory's ``manifest.json``.

    Raises:
        ManifestError: when it is missing or not a valid manifest.
    """
    path = manifest_path(directory_or_file)
    shown = display_path(path)
    if not path.is_file():
        raise ManifestError(
            f"{shown}: no manifest: this directory was not written or validated by phiv",
            hint="run `phiv-data validate` on its .jsonl files to check them and write one",
        )
    try:
        return _decode_manifest(path.read_bytes())
    except msgspec.DecodeError as error:  # msgspec.ValidationError included
        raise ManifestError(
            f"{shown}: {_manifest_problem(error)}",
            hint="the manifest is damaged; rerun the converter or `phiv-data validate`",
        ) from None


def save_manifest(directory: str | Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically into ``directory`` (always the last write)."""
    path = Path(directory) / MANIFEST_NAME
    with atomic_write(path, "wb") as handle:
        handle.write(orjson.dumps(manifest.to_dict(), option=orjson.OPT_INDENT_2))
        handle.write(b"\n")
    return path


def shard_problems(directory: str | Path, shard: Shard) -> list[str]:
    """Why a shard cannot be trusted: missing, bytes changed, not validated, failed."""
    directory = Path(directory)
    path = directory / shard.file
    shown = display_path(path)
    if not path.is_file():
        return [f"{shown}: listed in the manifest but missing"]
    actual = sha256_file(path)
    if actual != shard.sha256:
        return [f"{shown}: bytes changed since the manifest was written "
                f"(sha256 {actual[:12]}... != {shard.sha256[:12]}...)"]
    if shard.validation is None:
        return [f"{shown}: never validated"]
    if shard.validation.sha256 != actual:
        return [f"{shown}: validated bytes differ from the current file"]
    if not shard.validation.passed:
        return [f"{shown}: failed validation with {shard.validation.errors} error(s)"]
    return []


def images_root_of(directory: str | Path, shard: Shard) -> Path:
    """Absolute images root of a shard listed in the manifest of ``directory``."""
    root = Path(shard.images_root)
    return root if root.is_absolute() else Path(directory) / root


def verify_dataset(directory_or_file: str | Path, *, splits: Iterable[str] | None = None
                   ) -> tuple[Path, Manifest]:
    """Check that a dataset's shards are validated and unchanged.

    Args:
        directory_or_file: dataset directory or its manifest.
        splits: only check shards of these splits (all when ``None``).

    Returns:
        ``(dataset_directory, manifest)``.

    Raises:
        ManifestError: naming every problem and the ``phiv-data validate`` command to run.
    """
    path = manifest_path(directory_or_file)
    manifest = load_manifest(path)
    directory = path.parent
    wanted = set(splits) if splits is not None else None
    problems: list[str] = []
    commands: list[str] = []
    for shard in manifest.shards:
        if wanted is not None and shard.split not in wanted:
            continue
        found = shard_problems(directory, shard)
        if found:
            problems.extend(found)
            commands.append(
                f"phiv-data validate {display_path(directory / shard.file)} "
                f"--images-root {display_path(images_root_of(directory, shard))}"
            )
    if problems:
        raise ManifestError(
            "refusing unvalidated data: " + "; ".join(problems),
            hint="run " + " && ".join(f"`{command}`" for command in commands),
        )
    return directory, manifest


PLACE_MODES = ("link", "copy", "move")


def place_file(source: str | Path, target: str | Path, *, mode: str = "link",
               temp_dir: str | Path | None = None, reuse_same_size: bool = False) -> None:
    """Put ``source`` at ``target`` (a hard link, a copy or a move), replacing it atomically.

    The file is first placed under a temporary name, then renamed, so ``target`` is never
    seen half-copied. A ``target`` that already is ``source`` (the same inode) is left alone.

    Args:
        source: an existing file.
        target: where it goes; missing parent directories are created.
        mode: ``link`` hard-links (copying where linking fails, e.g. across filesystems),
            ``copy`` copies, ``move`` renames ``source`` away.
        temp_dir: where the temporary name lives (same filesystem as ``target``; a work
            directory that a resumed run cleans up); default: ``target``'s directory.
        reuse_same_size: also keep an existing ``target`` of ``source``'s size. For
            resumable jobs, whose targets are only ever written whole by an earlier
            (interrupted) run of the same job or by another item placing the same file.

    Raises:
        ValueError: an unknown ``mode``.
        OSError: ``source`` is unreadable or ``target`` unwritable.
    """
    import shutil

    if mode not in PLACE_MODES:
        raise ValueError(f"mode must be one of {', '.join(PLACE_MODES)}, not {mode!r}")
    source, target = Path(source), Path(target)
    try:
        existing = target.stat()
    except FileNotFoundError:
        pass
    else:
        if os.path.samefile(source, target) or (
                reuse_same_size and existing.st_size == source.stat().st_size):
            return
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "move":
        os.replace(source, target)
        return
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX,
                                     dir=temp_dir or target.parent)
    os.close(fd)
    temp = Path(temp_name)
    try:
        temp.unlink()  # os.link needs a free name; mkstemp only reserved a unique one
        try:
            if mode == "copy":
                raise OSError("copy requested")
            os.link(source, temp)
        except OSError:
            shutil.copyfile(source, temp)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
