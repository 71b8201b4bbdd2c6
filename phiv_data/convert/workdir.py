"""The work directory that makes a conversion resumable: ``OUT/.phiv-work/``.

- ``state.json``: the plan fingerprint (converter, output options, every item key and
  split) and the fan-out part. A rerun with anything different is refused.
- ``journal.jsonl``: one line per finished item (record, media paths and sizes, notes, or
  the skip reason), appended with a single ``write`` by the main process only. It is the
  commit point: an item is done when its line is complete and its media exist with the
  recorded sizes. A torn last line (SIGKILL during the write) is cut off on load.
- ``tmp/``: where workers write media before renaming them into place; emptied when a run
  starts, so a killed run's temporaries never accumulate.
- ``lock``: an exclusive ``flock`` so two runs never write into the same directory.

The whole directory is removed once the manifest is written.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from phiv_data.errors import UsageError, display_path
from phiv_data.shards import atomic_write

if TYPE_CHECKING:
    from phiv_data.convert.framework import Plan

WORK_DIR = ".phiv-work"

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


def plan_fingerprint(plan: Plan) -> str:
    """sha256 over what decides the output: dataset, options, shard names, item keys."""
    digest = hashlib.sha256()
    digest.update(orjson.dumps({"dataset": plan.dataset, "options": plan.options,
                                "shards": plan.shard_names}, option=orjson.OPT_SORT_KEYS))
    for item in plan.items:
        digest.update(orjson.dumps([item.key, item.split]))
    return digest.hexdigest()


def remove(out: Path) -> None:
    """Delete ``out``'s work directory, if any."""
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)


def sync_filesystem(path: Path) -> None:
    """Flush every written file of the filesystem holding ``path`` to disk (``syncfs``).

    One call instead of one fsync per image; falls back to ``os.sync`` off Linux.
    """
    libc_name = ctypes.util.find_library("c")
    syncfs = getattr(ctypes.CDLL(libc_name), "syncfs", None) if libc_name else None
    if syncfs is not None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


def _describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    if old.get("dataset") != new.get("dataset"):
        return f"it is a {old.get('dataset')} conversion, not {new.get('dataset')}"
    if old.get("part") != new.get("part"):
        return f"it is fan-out part {old.get('part')}, not {new.get('part')}"
    old_options, new_options = old.get("options", {}), new.get("options", {})
    changed = [f"{name}: {old_options.get(name)!r} -> {new_options.get(name)!r}"
               for name in sorted(set(old_options) | set(new_options))
               if old_options.get(name) != new_options.get(name)]
    if changed:
        return "options differ (" + "; ".join(changed) + ")"
    return "the input files differ (other videos, rows or splits)"


class WorkDir:
    """An open, locked work directory (use :meth:`open` as a context manager)."""

    def __init__(self, out: Path, lock_fd: int) -> None:
        self.out = out
        self.path = out / WORK_DIR
        self.tmp = self.path / "tmp"
        self.journal = self.path / "journal.jsonl"
        self._lock_fd = lock_fd
        self._journal_fd: int | None = None

    @classmethod
    def open(cls, out: Path, plan: Plan, plan_fp: str, part: tuple[int, int] | None) -> WorkDir:
        """Create or reopen ``out``'s work directory for this plan.

        Raises:
            UsageError: ``out`` is not empty and holds no conversion, another run holds the
                lock, or the unfinished conversion there is a different one.
        """
        out.mkdir(parents=True, exist_ok=True)
        path = out / WORK_DIR
        fresh = not path.is_dir()
        if fresh and any(out.iterdir()):
            raise UsageError(f"{display_path(out)} is not empty and holds no unfinished "
                             "conversion", hint="choose an empty or new --out directory")
        path.mkdir(exist_ok=True)
        lock_fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(lock_fd)
                raise UsageError(f"another conversion is writing into {display_path(out)}",
                                 hint="wait for it to finish, or use another --out") from None
        work = cls(out, lock_fd)
        state = {"dataset": plan.dataset, "options": plan.options, "plan_fingerprint": plan_fp,
                 "part": list(part) if part else None}
        state_path = path / "state.json"
        try:
            old = orjson.loads(state_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            old = None
        if old is not None and (old.get("plan_fingerprint"), old.get("part")) != (
                plan_fp, state["part"]):
            work.close()
            raise UsageError(
                f"{display_path(out)} holds an unfinished conversion that differs from this "
                f"one: {_describe_difference(old, state)}",
                hint="rerun the original command to finish it, or choose another --out")
        if old is None:
            work.journal.unlink(missing_ok=True)
            with atomic_write(state_path, "wb") as handle:
                handle.write(orjson.dumps(state, option=orjson.OPT_SORT_KEYS))
        shutil.rmtree(work.tmp, ignore_errors=True)
        work.tmp.mkdir()
        return work

    def load_journal(self, plan: Plan, positions: range, images_root: Path
                     ) -> dict[int, dict[str, Any]]:
        """Items already finished by earlier runs, by plan position.

        An entry counts only if it belongs to this part, names the same item key, and all
        its media still exist with the recorded sizes; otherwise the item is redone. Skipped
        items are always tried again: the user may have fixed the input since (as a
        ``--strict`` stop tells them to), and an unchanged input gives the same skip.
        """
        done: dict[int, dict[str, Any]] = {}
        if self.journal.is_file():
            data = self.journal.read_bytes()
            complete = data[: data.rfind(b"\n") + 1]
            if len(complete) != len(data):  # a torn last line from a killed run
                with open(self.journal, "r+b") as handle:
                    handle.truncate(len(complete))
            for line in complete.splitlines():
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                position = entry.get("p")
                if (isinstance(position, int) and position in positions
                        and not entry.get("s")
                        and plan.items[position].key == entry.get("k")
                        and _media_present(images_root, entry.get("m", []))):
                    done[position] = entry
        self._journal_fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return done

    def append(self, entry: dict[str, Any]) -> None:
        """Commit one finished item (a single ``write`` of one line)."""
        assert self._journal_fd is not None, "load_journal first"
        line = orjson.dumps(entry) + b"\n"
        written = os.write(self._journal_fd, line)
        if written != len(line):  # pragma: no cover - regular files write fully
            raise OSError(f"short write to {self.journal}")

    def close(self) -> None:
        """Release the lock (the directory stays, for a later resume)."""
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> WorkDir:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        self.close()
        if exc_type is None:
            remove(self.out)


def _media_present(images_root: Path, media: list[list[Any]]) -> bool:
    for relative, size in media:
        try:
            if (images_root / relative).stat().st_size != size:
                return False
        except OSError:
            return False
    return True
