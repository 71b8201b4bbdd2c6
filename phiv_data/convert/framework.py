"""The converter framework: what every ``phiv-data convert <dataset>`` shares.

A dataset module holds only what is specific to its dataset. It plugs in with two things:

1. **A plan**: every unit of work (a video, a question, a meme) as a :class:`WorkItem`, in a
   deterministic order (sort by path or by the native file's line order; never rely on
   directory listing order or set/dict iteration of unsorted input). Each item has a
   stable unique ``key`` (e.g. the source path relative to ``--src``, or ``file:line``),
   the ``split`` whose shard its record goes to, and a picklable ``payload`` with whatever
   the row function needs (the native row, an id, a resolved image path).
2. **A pure row function** ``process(item) -> Converted | Skipped``: from one item to one
   record (a :class:`phiv_data.Record` or a dict) plus the media files to write
   (:class:`MediaFile`: bytes, or a source file to copy or hard-link). It must not write
   anything itself and must give the same result every time. It runs in worker
   processes, so it must be picklable: a module-level function, or
   ``functools.partial(module_function, options=...)`` with picklable options. Bad input
   is returned as ``Skipped(reason, detail)`` (``reason`` a short stable code such as
   ``"missing-image"``) or raised as a :class:`phiv_data.errors.PhivError`; any other
   exception is also recorded as a skip (``unexpected-error``) rather than crash the run.

Then ``convert()`` in the dataset module is typically::

    def convert(src, out, options, run=RunOptions()) -> ConvertReport:
        items = [...]                                    # deterministic order
        plan = Plan(dataset="docvqa", items=items,
                    process=functools.partial(row_to_record, options=options),
                    options={"prompt": options.prompt, ...},   # all that decides output bytes
                    shard_names={"train": "docvqa_train.jsonl", "val": "docvqa_val.jsonl"},
                    notes=["found train_v1.0_withQT.json (39463 rows)"], unit="questions")
        return run_conversion(plan, out, run)

:func:`run_conversion` does everything else, identically for all datasets:

- **Output**: ``OUT/<shard name>`` per split via :class:`phiv_data.shards.ShardWriter`,
  records in plan order; media under ``OUT/images/`` (``MediaFile.path`` is relative to
  it); ``OUT/manifest.json`` written last, so its presence means the output is complete.
- **Atomic**: every image is written to ``OUT/.phiv-work/tmp/`` and renamed into place,
  so no partial image or JSONL is ever visible. Images are flushed to disk once
  (``syncfs``) before the manifest is written instead of one fsync per file.
- **Resumable**: each finished item is appended to ``OUT/.phiv-work/journal.jsonl`` (the
  commit point). A run killed at any moment (SIGKILL included) and rerun with the same
  command skips the journaled items whose media are still on disk, tries journaled skips
  again (their input may have been fixed since), cleans the killed run's temporaries and
  finishes; the result is byte-identical to an uninterrupted run.
  Rerunning a finished conversion does nothing. Other options or inputs into the same
  ``--out`` are refused with a message saying what differs.
- **Parallel**: ``RunOptions.workers`` processes (default: every usable core). The output
  does not depend on the worker count: records are written in plan order at the end. A
  worker killed by a crashing decoder is replaced, and the item that crashed it is
  reported (``worker-crashed``).
- **Fan-out**: ``num_shards=K, shard_index=i`` converts the i-th contiguous block of the
  plan into its own directory; :func:`phiv_data.convert.join.join_parts` merges the K
  directories into one dataset with one manifest, byte-identical to a single run.
- **Report**: :class:`ConvertReport` lists every skipped item with its reason and every
  item the converter changed (``Converted.notes``), plus the plan's notes; it goes into
  ``manifest.json``'s ``report``. Anything specific to one run (timings, worker count,
  host, command) goes only into the manifest's ``producer``.
- **Progress** on stderr for runs longer than a couple of seconds (``RunOptions.progress``).

Record ids are the converter's business (put them in the payload when building the
plan); ids built from the plan position stay stable when some items are skipped.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phiv_data.convert import workdir
from phiv_data.convert.execution import execute
from phiv_data.convert.progress import Progress
from phiv_data.convert.report import ConvertReport, ItemNote, SkippedItem
from phiv_data.errors import DataError, UsageError, display_path
from phiv_data.manifest import MANIFEST_NAME, Manifest
from phiv_data.schema import Record
from phiv_data.shards import ShardWriter, load_manifest, save_manifest, sha256_file

IMAGES_DIR = "images"


@dataclass(frozen=True)
class WorkItem:
    """One unit of work of a plan.

    Attributes:
        key: unique and stable across runs (e.g. a path relative to ``--src``).
        split: the split whose shard receives the record.
        payload: picklable data for the row function.
        where: where the item comes from, for reports (``"train.jsonl:12"``); ``key`` if unset.
    """

    key: str
    split: str
    payload: Any = None
    where: str | None = None


@dataclass(frozen=True)
class MediaFile:
    """A file the framework writes under ``OUT/images``.

    Exactly one of ``data`` (the bytes) and ``source`` (a file to copy) is set. With
    ``link=True`` a source is hard-linked when the filesystem allows (copied otherwise).
    A ``source`` whose destination already exists with the same size is not copied again
    (one page shared by many questions is written once).
    """

    path: str
    data: bytes | None = None
    source: str | Path | None = None
    link: bool = False


@dataclass(frozen=True)
class Converted:
    """The row function's result for a good item: one record and its media."""

    record: Record | dict[str, Any]
    media: tuple[MediaFile, ...] | list[MediaFile] = ()
    notes: tuple[str, ...] | list[str] = ()
    """What was changed or assumed for this item (e.g. "3 frames < 8: frames repeated");
    listed in the report."""


@dataclass(frozen=True)
class Skipped:
    """The row function's result for an item that cannot be converted."""

    reason: str
    """Short stable code: ``missing-image``, ``undecodable``, ``empty-video``, ..."""
    detail: str
    """What exactly is wrong, for a human."""


ItemResult = Converted | Skipped


@dataclass
class Plan:
    """Everything :func:`run_conversion` needs to know about a dataset conversion.

    Attributes:
        dataset: name recorded as the producer (``"ucf101"``).
        items: the work, in output order.
        process: the pure row function (picklable).
        options: every option that decides the output bytes (JSON-serialisable; no paths
            of the machine, no worker counts). Part of the resume/join fingerprint.
        shard_names: split -> shard file name, in the order splits are written.
        notes: dataset-level facts for the report ("layout: official, fold 1").
        unit: what an item is, for progress ("videos").
        preload: modules the row function needs (decoders, PIL): imported once by the
            process that forks the workers, so that they start at once.
    """

    dataset: str
    items: list[WorkItem]
    process: Callable[[WorkItem], ItemResult]
    options: dict[str, Any]
    shard_names: dict[str, str]
    notes: list[str] = field(default_factory=list)
    unit: str = "items"
    preload: tuple[str, ...] = ()


@dataclass
class RunOptions:
    """How to run a conversion (none of it changes the output bytes).

    Attributes:
        workers: worker processes; ``None`` = every usable core; 1 = in this process.
        num_shards: split the plan into this many contiguous parts (fan-out).
        shard_index: which part this run converts (0-based).
        progress: ``True`` always, ``False`` never, ``None`` on runs longer than 2 s.
        strict: stop with an error at the first skipped item.
        command: the command line, recorded in the manifest's ``producer``.
    """

    workers: int | None = None
    num_shards: int = 1
    shard_index: int = 0
    progress: bool | None = None
    strict: bool = False
    command: str | None = None


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def part_range(total: int, num_shards: int, shard_index: int) -> range:
    """Plan positions of part ``shard_index`` of ``num_shards`` (contiguous blocks).

    Raises:
        UsageError: when the shard arguments are out of range.
    """
    if num_shards < 1:
        raise UsageError(f"--num-shards must be at least 1, not {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise UsageError(f"--shard-index must be in 0..{num_shards - 1}, not {shard_index}")
    return range(total * shard_index // num_shards, total * (shard_index + 1) // num_shards)


def run_conversion(plan: Plan, out: str | Path, run: RunOptions | None = None) -> ConvertReport:
    """Execute a plan into ``out``: resumable, parallel, deterministic (see module doc).

    Args:
        plan: the dataset's work and row function.
        out: output directory (created; must be empty, or hold this same conversion).
        run: workers, fan-out part, progress, strictness.

    Returns:
        The report of the whole output (of this part when fanned out).

    Raises:
        UsageError: bad run options, a non-empty ``out`` holding something else, or an
            unfinished conversion with other options in ``out``.
        DataError: with ``strict``, at the first skipped item (rerun without ``strict``
            to continue from there).
    """
    run = run or RunOptions()
    out = Path(out)
    positions = part_range(len(plan.items), run.num_shards, run.shard_index)
    part = (run.shard_index, run.num_shards) if run.num_shards > 1 else None
    plan_fp = workdir.plan_fingerprint(plan)
    keys = [item.key for item in plan.items]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{plan.dataset}: work item keys must be unique")

    finished = _already_finished(out, plan, plan_fp, part)
    if finished is not None:
        return finished

    started = time.time()
    with workdir.WorkDir.open(out, plan, plan_fp, part) as work:
        done = work.load_journal(plan, positions, out / IMAGES_DIR)
        todo = [position for position in positions if position not in done]
        workers = max(1, min(run.workers or usable_cores(), max(len(todo), 1)))
        progress = Progress(len(positions), label=f"convert {plan.dataset}", unit=plan.unit,
                            enabled=run.progress)
        progress.resume(len(done), skipped=sum(1 for entry in done.values() if entry["s"]))
        try:
            for position, entry in execute(plan, todo, out / IMAGES_DIR, work.tmp, workers):
                work.append(entry)
                done[position] = entry
                progress.update(skipped=1 if entry["s"] else 0)
                if run.strict and entry["s"]:
                    item = plan.items[position]
                    raise DataError(f"{item.where or item.key}: {entry['s'][0]}: "
                                    f"{entry['s'][1]}",
                                    hint="fix the input, or rerun without --strict to skip "
                                    "it (finished items are kept)")
        finally:
            progress.close()
        report, shards = _write_shards(plan, out, positions, done, part)
        workdir.sync_filesystem(out)
        producer = {
            "converter": plan.dataset, "command": run.command, "options": plan.options,
            "plan_fingerprint": plan_fp, "shard_names": plan.shard_names,
            "part": {"index": part[0], "count": part[1]} if part else None,
            "workers": workers, "resumed_items": len(positions) - len(todo),
            "host": platform.node(), "python": platform.python_version(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 3),
            "items_per_second": round(len(todo) / max(time.time() - started, 1e-9), 3),
        }
        save_manifest(out, Manifest(shards=shards, producer=producer, report=report.to_dict()))
    return report


def _write_shards(plan: Plan, out: Path, positions: range, done: dict[int, dict[str, Any]],
                  part: tuple[int, int] | None) -> tuple[ConvertReport, list[Any]]:
    report = ConvertReport(dataset=plan.dataset, out=out, notes=list(plan.notes), part=part)
    by_split: dict[str, list[int]] = {}
    for position in positions:
        by_split.setdefault(plan.items[position].split, []).append(position)
    unknown = set(by_split) - set(plan.shard_names)
    if unknown:
        raise ValueError(f"{plan.dataset}: items in splits without a shard name: {unknown}")
    shards = []
    for split, name in plan.shard_names.items():
        if split not in by_split:
            continue
        report.planned[split] = len(by_split[split])
        with ShardWriter(out / name, split=split, images_root=IMAGES_DIR) as writer:
            for position in by_split[split]:
                entry, item = done[position], plan.items[position]
                if entry["s"]:
                    reason, detail = entry["s"]
                    report.skipped.append(SkippedItem(position, item.key, split, reason,
                                                      detail, item.where or item.key))
                    continue
                writer.write(entry["r"])
                report.changed.extend(ItemNote(position, item.key, split, note)
                                      for note in entry["n"])
        assert writer.shard is not None
        shards.append(writer.shard)
        report.records[split] = writer.shard.records
        report.images[split] = writer.shard.images
    return report, shards


def _already_finished(out: Path, plan: Plan, plan_fp: str,
                      part: tuple[int, int] | None) -> ConvertReport | None:
    """The report of a finished identical conversion in ``out``, or None if there is none."""
    if not (out / MANIFEST_NAME).is_file():
        return None
    manifest = load_manifest(out)
    producer = manifest.producer or {}
    want_part = {"index": part[0], "count": part[1]} if part else None
    if producer.get("plan_fingerprint") != plan_fp or producer.get("part") != want_part:
        raise UsageError(
            f"{display_path(out)} already holds a finished conversion "
            f"({producer.get('converter', 'unknown')}, options {producer.get('options')}) that "
            "differs from this one",
            hint="choose another --out, or delete that directory to convert again")
    for shard in manifest.shards:
        path = out / shard.file
        if not path.is_file() or sha256_file(path) != shard.sha256:
            raise UsageError(f"{display_path(path)} changed since the conversion finished",
                             hint="delete the output directory and convert again")
    workdir.remove(out)  # a run killed after writing its manifest
    return ConvertReport.from_dict(manifest.report or {"dataset": plan.dataset}, out)

