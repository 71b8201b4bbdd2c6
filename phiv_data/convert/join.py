"""Joining fanned-out conversion parts into one dataset with one manifest.

``phiv-data convert DATASET ... --num-shards K --shard-index i --out part-i`` on K machines
gives K finished part directories. :func:`join_parts` checks that they are the K parts of
the same plan (same converter, options and input), then builds ``OUT``: each split's shard
is the parts' shards concatenated in part order, images are hard-linked (or copied, or
moved) into ``OUT/images``, and the reports are merged. The result is byte-identical to a
single run of the same command without ``--num-shards``. A killed join can be rerun.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from phiv_data.convert import workdir
from phiv_data.convert.framework import IMAGES_DIR, ConvertReport
from phiv_data.errors import ManifestError, UsageError, display_path
from phiv_data.manifest import MANIFEST_NAME, Manifest, Shard
from phiv_data.shards import atomic_write, load_manifest, place_file, save_manifest

JOIN_MODES = ("link", "copy", "move")


def _load_parts(parts: Sequence[Path]) -> list[tuple[Path, Manifest]]:
    loaded = []
    for directory in parts:
        if not (directory / MANIFEST_NAME).is_file():
            raise ManifestError(f"{display_path(directory)}: part not finished (no manifest)",
                                hint="rerun its `phiv-data convert ... --shard-index` command")
        manifest = load_manifest(directory)
        producer = manifest.producer or {}
        if not producer.get("part") or not producer.get("plan_fingerprint"):
            raise UsageError(f"{display_path(directory)} is not a part of a fanned-out "
                             "conversion (converted without --num-shards)")
        loaded.append((directory, manifest))
    first = loaded[0][1].producer or {}
    for directory, manifest in loaded[1:]:
        producer = manifest.producer or {}
        if producer.get("plan_fingerprint") != first["plan_fingerprint"]:
            raise UsageError(f"{display_path(directory)} belongs to another conversion than "
                             f"{display_path(loaded[0][0])} (other options or input files)",
                             hint="join only the parts of one command")
    count = first["part"]["count"]
    indices = sorted(manifest.producer["part"]["index"] for _, manifest in loaded)  # type: ignore[index]
    if indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        repeated = sorted({index for index in indices if indices.count(index) > 1})
        raise UsageError(f"need each of the {count} parts exactly once: "
                         f"missing {missing}, repeated {repeated}")
    return sorted(loaded, key=lambda pair: pair[1].producer["part"]["index"])  # type: ignore[index]


def _merge_shard(split: str, name: str, part_shards: list[tuple[Path, Shard]], out: Path) -> Shard:
    digest = hashlib.sha256()
    with atomic_write(out / name, "wb") as handle:
        for directory, shard in part_shards:
            with open(directory / shard.file, "rb") as source:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    handle.write(chunk)
    return Shard(file=name, split=split, images_root=IMAGES_DIR, sha256=digest.hexdigest(),
                 size_bytes=sum(shard.size_bytes for _, shard in part_shards),
                 records=sum(shard.records for _, shard in part_shards),
                 images=sum(shard.images for _, shard in part_shards),
                 unlabeled=sum(shard.unlabeled for _, shard in part_shards))


def join_parts(parts: Sequence[str | Path], out: str | Path, *, mode: str = "link",
               command: str | None = None) -> ConvertReport:
    """Merge the finished parts of a fanned-out conversion into ``out``.

    Args:
        parts: the part directories, in any order (each part exactly once).
        out: the joined dataset directory (new or empty, or an unfinished join of the same
            parts).
        mode: ``link`` hard-links images (copying across filesystems), ``copy`` copies,
            ``move`` moves them out of the parts (which are unusable afterwards).
        command: the command line, for the manifest's ``producer``.

    Returns:
        The merged report, equal to a single run's.

    Raises:
        UsageError / ManifestError: parts missing, repeated, unfinished or from different
            conversions; ``out`` not empty.
    """
    if mode not in JOIN_MODES:
        raise UsageError(f"--mode must be one of {', '.join(JOIN_MODES)}, not {mode!r}")
    if not parts:
        raise UsageError("give the part directories to join")
    out = Path(out)
    loaded = _load_parts([Path(part) for part in parts])
    first = loaded[0][1].producer or {}
    fingerprint = first["plan_fingerprint"]
    state = orjson.dumps({"join": fingerprint})
    work = out / workdir.WORK_DIR
    if (out / MANIFEST_NAME).is_file():
        manifest = load_manifest(out)
        if (manifest.producer or {}).get("plan_fingerprint") == fingerprint:
            workdir.remove(out)
            return ConvertReport.from_dict(manifest.report or {}, out)
    if out.is_dir() and any(out.iterdir()) and not (
            (work / "join.json").is_file() and (work / "join.json").read_bytes() == state):
        raise UsageError(f"{display_path(out)} is not empty",
                         hint="join into a new or empty directory")
    started = time.time()
    shutil.rmtree(work / "tmp", ignore_errors=True)
    (work / "tmp").mkdir(parents=True)
    (work / "join.json").write_bytes(state)

    for directory, _ in loaded:
        images = directory / IMAGES_DIR
        for root, dirs, files in os.walk(images):
            dirs.sort()
            for name in sorted(files):
                source = Path(root) / name
                # reuse_same_size: placed by an earlier, killed join or by another part
                # (a shared page)
                place_file(source, out / IMAGES_DIR / source.relative_to(images), mode=mode,
                           temp_dir=work / "tmp", reuse_same_size=True)

    shard_names: dict[str, str] = first["shard_names"]
    report = ConvertReport(dataset=first["converter"], out=out)
    shards = []
    for split, name in shard_names.items():
        part_shards = [(directory, shard) for directory, manifest in loaded
                       for shard in manifest.shards if shard.split == split]
        if part_shards:
            shards.append(_merge_shard(split, name, part_shards, out))
    part_reports = [ConvertReport.from_dict(manifest.report or {}, directory)
                    for directory, manifest in loaded]
    report.notes = list(part_reports[0].notes)
    for split in shard_names:
        for field_name in ("planned", "records", "images"):
            values = [getattr(part, field_name)[split] for part in part_reports
                      if split in getattr(part, field_name)]
            if values:
                getattr(report, field_name)[split] = sum(values)
    for part in part_reports:
        report.skipped.extend(part.skipped)
        report.changed.extend(part.changed)

    workdir.sync_filesystem(out)
    producer: dict[str, Any] = {
        key: first.get(key) for key in ("converter", "options", "plan_fingerprint", "shard_names")
    }
    producer.update({
        "command": command, "part": None, "join_mode": mode, "host": platform.node(),
        "seconds": round(time.time() - started, 3),
        "joined_parts": [{"dir": str(directory.resolve()), **{
            key: (manifest.producer or {}).get(key)
            for key in ("part", "host", "workers", "seconds", "started_at", "command")}}
            for directory, manifest in loaded],
    })
    save_manifest(out, Manifest(shards=shards, producer=producer, report=report.to_dict()))
    workdir.remove(out)
    return report
