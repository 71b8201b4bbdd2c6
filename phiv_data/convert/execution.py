"""Running a plan's row function over work items, in this process or in a worker pool.

Workers call the row function and write its media (temporary file, then rename); the main
process receives one small journal entry per item, in completion order. Nothing here
decides output order: the framework writes records in plan order at the end.

A worker that dies (a decoder crashing on a broken file) breaks the pool. The items that
were in flight are then retried one at a time in a fresh pool; the one that kills its
worker again is reported as ``worker-crashed`` instead of stopping the run.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from phiv_data.errors import DataError, PhivError
from phiv_data.schema import Record
from phiv_data.shards import place_file

if TYPE_CHECKING:
    from phiv_data.convert.framework import MediaFile, Plan, WorkItem

Entry = dict[str, Any]


def check_media_path(path: str) -> str:
    """Return ``path`` if it is a clean relative '/' path; raise DataError otherwise."""
    parts = path.split("/")
    if (not path or path.startswith("/") or "\\" in path
            or any(part in ("", ".", "..") for part in parts)):
        raise DataError(f"media path {path!r} must be relative, use '/', and have no "
                        "empty, '.' or '..' segments")
    return path


class MediaWriter:
    """Writes media files under an images root through a temporary directory."""

    def __init__(self, images_root: Path, tmp: Path) -> None:
        self.images_root = images_root
        self.tmp = tmp
        self._counter = 0
        self._made: set[Path] = set()

    def write(self, media: MediaFile) -> int:
        """Write one file atomically; return its size in bytes."""
        destination = self.images_root / check_media_path(media.path)
        if destination.parent not in self._made:
            destination.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(destination.parent)
        if (media.data is None) == (media.source is None):
            raise DataError(f"media {media.path!r}: set exactly one of data and source")
        if media.source is not None:
            # reuse_same_size: written by an earlier item (a shared page) or run
            place_file(media.source, destination, mode="link" if media.link else "copy",
                       temp_dir=self.tmp, reuse_same_size=True)
            return Path(media.source).stat().st_size
        assert media.data is not None
        self._counter += 1
        temporary = self.tmp / f"{os.getpid()}.{self._counter}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(media.data)
        os.replace(temporary, destination)
        return len(media.data)


def _error_reason(error: PhivError) -> str:
    name = type(error).__name__
    return "".join(f"-{char.lower()}" if char.isupper() else char for char in name).strip("-")


def run_item(process: Callable[[WorkItem], Any], item: WorkItem, position: int,
             writer: MediaWriter) -> Entry:
    """Convert one item and write its media; return its journal entry."""
    from phiv_data.convert.framework import Converted, Skipped

    try:
        result = process(item)
    except PhivError as error:
        result = Skipped(_error_reason(error), error.message)
    except Exception as error:  # noqa: BLE001 - a bad input must not stop the run
        result = Skipped("unexpected-error", f"{type(error).__name__}: {error}")
    if isinstance(result, Converted):
        try:
            record = result.record if isinstance(result.record, Record) else (
                Record.model_validate(result.record))
            for entry in result.media:
                check_media_path(entry.path)
        except ValidationError as error:
            result = Skipped("invalid-record", str(error).replace("\n", " "))
        except DataError as error:
            result = Skipped("data-error", error.message)
        else:
            media = [[entry.path, writer.write(entry)] for entry in result.media]
            return {"p": position, "k": item.key, "r": record.to_json_dict(), "m": media,
                    "n": list(result.notes), "s": None}
    if not isinstance(result, Skipped):
        raise TypeError(f"the row function returned {type(result).__name__}, "
                        "not Converted or Skipped")
    return {"p": position, "k": item.key, "r": None, "m": [], "n": [],
            "s": [result.reason, result.detail]}


_worker: dict[str, Any] = {}


def _init_worker(process: Callable[[WorkItem], Any], images_root: Path, tmp: Path) -> None:
    _worker["process"] = process
    _worker["writer"] = MediaWriter(images_root, tmp)


def _ping() -> bool:
    return True


def _work(position: int, item: WorkItem) -> Entry:
    return run_item(_worker["process"], item, position, _worker["writer"])


def _work_batch(batch: list[tuple[int, WorkItem]]) -> list[Entry]:
    return [_work(position, item) for position, item in batch]


BATCH_ITEMS = 8
"""Consecutive items handed to one worker at once: rows that share an image (DocVQA's pages,
NLVR2's pairs) sit next to each other in a plan, so one worker decodes the image and its
neighbours find it already written, instead of two workers decoding it at the same time."""


def _crashed(position: int, item: WorkItem) -> Entry:
    return {"p": position, "k": item.key, "r": None, "m": [], "n": [],
            "s": ["worker-crashed", ("the worker process died while converting this item "
                                     "(a decoder crash on a damaged file, or out of memory)")]}


def execute(plan: Plan, todo: list[int], images_root: Path, tmp: Path,
            workers: int) -> Iterator[tuple[int, Entry]]:
    """Yield ``(position, journal entry)`` for every position in ``todo``.

    Args:
        plan: the plan whose items and row function to run.
        todo: plan positions still to do.
        images_root: where media go.
        tmp: directory for temporary files (same filesystem as ``images_root``).
        workers: 1 runs in this process; more uses a process pool.
    """
    if workers <= 1:
        writer = MediaWriter(images_root, tmp)
        for position in todo:
            yield position, run_item(plan.process, plan.items[position], position, writer)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":
        # Workers fork from a server that has already imported the row function's module
        # (and so its decoders): they start in milliseconds instead of re-importing.
        function = getattr(plan.process, "func", plan.process)
        context.set_forkserver_preload([__name__, function.__module__, *plan.preload])

    def new_pool() -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                   initargs=(plan.process, images_root, tmp))
        try:  # a pool that cannot start must not be mistaken for items crashing it
            pool.submit(_ping).result()
        except BrokenProcessPool:
            pool.shutdown(wait=False, cancel_futures=True)
            raise PhivError("worker processes could not start (see the messages above)",
                            hint="rerun with --workers 1; from Python, run the conversion "
                            "from an importable script, not from stdin") from None
        return pool

    queue, suspects = deque(todo), deque[int]()
    window = workers * 4
    pool: ProcessPoolExecutor | None = None
    try:
        while queue or suspects:
            pool = pool or new_pool()
            if suspects:  # one at a time, so a crash names its item
                position = suspects.popleft()
                future = pool.submit(_work, position, plan.items[position])
                try:
                    entry = future.result()
                except BrokenProcessPool:
                    entry = _crashed(position, plan.items[position])
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = None
                yield position, entry
                continue
            in_flight: dict[Future[list[Entry]], list[int]] = {}
            while queue or in_flight:
                while queue and len(in_flight) < window:
                    size = max(1, min(BATCH_ITEMS, len(queue) // window))
                    positions = [queue.popleft() for _ in range(min(size, len(queue)))]
                    batch = [(position, plan.items[position]) for position in positions]
                    in_flight[pool.submit(_work_batch, batch)] = positions
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                broken = False
                for future in finished:
                    positions = in_flight.pop(future)
                    try:
                        entries = future.result()
                    except BrokenProcessPool:
                        broken = True
                        suspects.extend(positions)
                        continue
                    yield from zip(positions, entries)
                if broken:
                    suspects.extend(position for batch in in_flight.values() for position in batch)
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = None
                    break
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
