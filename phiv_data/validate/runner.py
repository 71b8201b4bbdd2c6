"""Run a validation: find the files and their images roots, split them, fan out, merge.

Files are cut into byte ranges at line starts; each range is validated by
:func:`phiv_data.validate.chunk.validate_chunk`, inline with one worker or in a process pool
with several. With one worker each file is one chunk, read once: a thread hashes the blocks
the validator reads. With several, a thread of the parent hashes each file while the
workers validate it. (size, mtime, inode) are compared before and after, so the recorded
sha256 is that of the bytes validated.
"""

from __future__ import annotations

import hashlib
import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from phiv_data.errors import DataError, PhivError, UsageError, display_path
from phiv_data.manifest import MANIFEST_NAME
from phiv_data.shards import (
    images_root_of,
    infer_split,
    load_manifest,
    relative_posix,
    sha256_file,
)
from phiv_data.validate.chunk import ChunkResult, ChunkTask, read_pieces, validate_chunk
from phiv_data.validate.merge import merge_results
from phiv_data.validate.options import ValidationOptions
from phiv_data.validate.report import FileSummary, ValidationReport

MIN_CHUNK_BYTES = 1 << 20
PREFETCH_PIECES = 4
"""Pieces (``chunk.READ_BYTES``, 4 MiB) the reading thread may be ahead of validation."""
MIN_DECODE_CHUNK_BYTES = 16 << 10
"""With ``--check-images decode`` the images, not the lines, are the work: a JSONL file of a
few hundred KiB can name thousands of images, so it is cut much finer."""
MAX_CHUNK_BYTES = 32 << 20
CHUNKS_PER_WORKER = 4


@dataclass(frozen=True)
class InputFile:
    """A JSONL file to validate and where its images are."""

    path: Path
    shown: str
    images_root: Path | None
    split: str | None


def _manifest_entry(path: Path):
    manifest_file = path.parent / MANIFEST_NAME
    if not manifest_file.is_file():
        return None
    manifest = load_manifest(manifest_file)
    return manifest.shard(relative_posix(path, path.parent))


def resolve_inputs(paths: list[str | Path], options: ValidationOptions) -> list[InputFile]:
    """Expand directories to their ``*.jsonl`` files and pick each file's images root.

    The root is ``options.images_root`` when given, else the one the file's manifest
    entry names, else ``images/`` beside the file.

    Raises:
        UsageError: for a path that does not exist or a directory without JSONL files.
    """
    if not paths:
        raise UsageError("no file to validate: give one or more .jsonl files or directories")
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(path.glob("*.jsonl"))
            if not found:
                raise UsageError(f"{display_path(path)}: no .jsonl files in this directory")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{display_path(path)}: no such file or directory")
    inputs: list[InputFile] = []
    seen: set[Path] = set()
    for path in files:
        absolute = path.resolve()
        if absolute in seen:
            continue
        seen.add(absolute)
        entry = _manifest_entry(absolute)
        if options.images_root is not None:
            root: Path | None = Path(options.images_root).absolute()
        elif entry is not None:
            root = images_root_of(absolute.parent, entry).absolute()
        else:
            root = absolute.parent / "images"
        split = entry.split if entry is not None and entry.split else infer_split(absolute)
        inputs.append(InputFile(absolute, display_path(path), root, split))
    return inputs


def _next_line_start(handle, offset: int, size: int) -> int:
    handle.seek(offset)
    while offset < size:
        piece = handle.read(1 << 16)
        if not piece:
            return size
        newline = piece.find(b"\n")
        if newline >= 0:
            return offset + newline + 1
        offset += len(piece)
    return size


def plan_chunks(inputs: list[InputFile], options: ValidationOptions, workers: int
                ) -> list[ChunkTask]:
    """Byte ranges starting at line starts; one per file with a single worker."""
    tasks: list[ChunkTask] = []
    collect = len(inputs) > 1
    run = uuid.uuid4().hex
    for index, item in enumerate(inputs):
        size = item.path.stat().st_size
        root = str(item.images_root) if item.images_root and item.images_root.is_dir() else None
        minimum = MIN_DECODE_CHUNK_BYTES if options.check_images == "decode" else MIN_CHUNK_BYTES
        target = min(MAX_CHUNK_BYTES, max(minimum, size // (workers * CHUNKS_PER_WORKER)))
        bounds = [0]
        if workers > 1:
            with open(item.path, "rb") as handle:
                while bounds[-1] + target < size:
                    bounds.append(_next_line_start(handle, bounds[-1] + target, size))
        if bounds[-1] != size or size == 0:
            bounds.append(size)
        for start, end in zip(bounds, bounds[1:]):
            tasks.append(ChunkTask(index, str(item.path), start, end, options, root, collect,
                                   run))
    return tasks


def _fingerprint(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def _pool_context():
    # Imported here: with one worker (the common case) the process pool is never used,
    # and multiprocessing with concurrent.futures cost about 15 ms of start-up.
    import multiprocessing

    # fork starts workers in milliseconds with everything imported; elsewhere spawn.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return multiprocessing.get_context(method)


def _hash_files(inputs: list[InputFile], hashes: dict[int, str]) -> threading.Thread:
    """Hash every file in a thread: hashlib and file reads release the GIL, so the hash of
    the exact bytes validated costs no time on the validating core."""

    def work() -> None:
        for index, item in enumerate(inputs):
            hashes[index] = sha256_file(item.path)

    thread = threading.Thread(target=work, name="phiv-validate-hash", daemon=True)
    thread.start()
    return thread


def _validate_and_hash(task: ChunkTask) -> tuple[ChunkResult, str]:
    """Validate a whole-file chunk while a thread reads the file ahead and hashes it (reads
    and hashlib release the GIL): the file is read once, which matters when it exceeds the
    page cache, and reading costs the validating thread nothing."""
    assert task.start == 0
    digest = hashlib.sha256()
    ready: queue.SimpleQueue[bytes | BaseException | None] = queue.SimpleQueue()
    credits = threading.Semaphore(PREFETCH_PIECES)  # bounds the memory read ahead
    stopped = threading.Event()

    def work() -> None:
        # Any error is handed to the validating thread and raised there: that thread must
        # never wait for a piece that will not come.
        try:
            for piece in read_pieces(task.path, task.start, task.end):
                ready.put(piece)
                digest.update(piece)
                credits.acquire()
                if stopped.is_set():
                    return
        except BaseException as error:  # noqa: BLE001
            ready.put(error)
            return
        ready.put(None)

    def pieces() -> Iterator[bytes]:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
            credits.release()

    thread = threading.Thread(target=work, name="phiv-validate-read", daemon=True)
    thread.start()
    try:
        result = validate_chunk(task, pieces())
    finally:
        stopped.set()
        credits.release()
        thread.join()
    return result, digest.hexdigest()


def iter_results(tasks: list[ChunkTask], workers: int, inputs: list[InputFile],
                 hashes: dict[int, str]) -> Iterator[ChunkResult]:
    """Validate every chunk; yield the results in task order, each as soon as it is ready,
    so that the merge folds one in while workers are still validating later ones (its
    duplicate-id pass would otherwise run alone after the last chunk). Each file's sha256
    is in ``hashes`` once the iterator is exhausted."""
    if workers <= 1 or len(tasks) <= 1:  # one chunk per file (plan_chunks)
        for task in tasks:
            result, hashes[task.file_index] = _validate_and_hash(task)
            yield result
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)),
                             mp_context=_pool_context()) as pool:
        futures = [pool.submit(validate_chunk, task) for task in tasks]
        hashing = _hash_files(inputs, hashes)  # after the workers are forked
        try:
            for future in futures:
                try:
                    result = future.result()
                except PhivError:
                    raise
                except Exception as error:  # a worker crashed: say where, not a traceback
                    if os.environ.get("PHIV_DEBUG"):
                        raise
                    raise DataError(f"a validation worker failed: {type(error).__name__}: "
                                    f"{error}", hint="rerun with --workers 1 (and "
                                    "PHIV_DEBUG=1) to see where") from None
                yield result
        except BaseException:
            for future in futures:  # do not wait for chunks nobody will read
                future.cancel()
            raise
    hashing.join()


def validate_paths(paths: list[str | Path], options: ValidationOptions | None = None
                   ) -> ValidationReport:
    """Validate JSONL files (or directories of them) and return every problem found.

    This is what ``phiv-data validate`` runs; it never writes anything (see
    :func:`phiv_data.validate.record_validation` for the manifest).

    Args:
        paths: ``.jsonl`` files or directories holding them.
        options: what to check (defaults: image files must exist, no token budget).

    Returns:
        The :class:`ValidationReport`; ``report.ok`` is the verdict.

    Raises:
        UsageError: for missing paths or bad options.
        DataError: when a file changes while it is being validated.
    """
    started = time.perf_counter()
    options = (options or ValidationOptions()).checked()
    inputs = resolve_inputs(paths, options)
    workers = options.worker_count
    before = {index: _fingerprint(item.path) for index, item in enumerate(inputs)}
    tasks = plan_chunks(inputs, options, workers)
    hashes: dict[int, str] = {}
    summaries = [FileSummary(item.path, item.shown, item.images_root,
                             bool(item.images_root and item.images_root.is_dir()), item.split)
                 for item in inputs]
    issues = merge_results(iter_results(tasks, workers, inputs, hashes), summaries, options)
    for index, item in enumerate(inputs):
        if _fingerprint(item.path) != before[index]:
            raise DataError(f"{item.shown}: changed while being validated",
                            hint="run the validation again once nothing writes to it")
        summaries[index].sha256 = hashes[index]
    return ValidationReport(summaries, issues, options,
                            tokens_estimated=options.tokenizer is None,
                            seconds=time.perf_counter() - started)
