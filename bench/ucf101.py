"""Videos per second converting UCF-101-like clips: phiv against the recipe's approach.

Generates realistic clips once (320x240, 25 fps, 7 s = 175 frames, XviD in AVI with an
MP3 track, one keyframe per 250 frames like the real UCF-101 files, about 400 kB each) in
the recipe's subset layout, then converts the same clips, in one run, with:

- ``recipe``: what the recipe's script does: PyAV decodes every frame, ``to_image()`` on
  each, keeps frames ``floor(k*T/8)``, saves them with PIL (quality 75), writes the JSONL.
- ``phiv <backend>``: ``phiv_data.convert.ucf101.convert`` with one worker (in this
  process), which also does everything the recipe does not: atomic writes, the resume
  journal, frame-count checks, meta, report and manifest.

Both are pinned to the same single core and alternate over ``--repeats`` rounds (median
taken), so the ratio is per core and load on a shared machine hits both alike. Then
phiv's scaling: ``--workers`` 1..all usable cores, unpinned.

Usage::

    python bench/ucf101.py                       # 24 clips, 3 rounds, workers 1..cores
    python bench/ucf101.py --clips 48 --repeats 5 --json bench-ucf101.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from phiv_data.convert import ucf101
from phiv_data.convert.framework import RunOptions, usable_cores
from phiv_data.demo import write_synthetic_clip

CLASSES = ("ApplyEyeMakeup", "BabyCrawling", "Basketball", "BenchPress")


def make_clips(root: Path, clips: int) -> Path:
    """The recipe's subset layout under ``root/src`` (reused when already there)."""
    src = root / "src"
    marker = src / f".complete-{clips}"
    if marker.is_file():
        return src
    shutil.rmtree(src, ignore_errors=True)
    for i in range(clips):
        class_name = CLASSES[i % len(CLASSES)]
        write_synthetic_clip(src / "train" / class_name / f"v_{class_name}_g{i:02d}_c01.avi",
                             frames=175, width=320, height=240, fps=25, seed=i,
                             keyframe_interval=250, audio=True)
    marker.touch()
    return src


def recipe_convert(src: Path, out: Path, frames: int = 8) -> None:
    """The recipe's conversion: decode all, to_image() all, keep the sampled, save JPEGs."""
    import av

    classes = sorted(path.name for path in (src / "train").iterdir())
    prompt = ("Classify the video into one of the following classes: "
              + ", ".join(classes) + ".")
    lines = []
    for index, video in enumerate(sorted((src / "train").glob("*/*.avi"))):
        class_name = video.parent.name
        target = out / "images" / "train" / class_name
        target.mkdir(parents=True, exist_ok=True)
        with av.open(str(video)) as container:
            decoded = [frame.to_image() for frame in container.decode(video=0)]
        count = len(decoded)
        images = []
        for k in range(frames):
            name = f"{video.stem}.{k}.jpg"
            decoded[int(k * count / frames)].save(target / name)
            images.append(f"train/{class_name}/{name}")
        lines.append({"id": f"train-{index:010d}", "source": "ucf101", "conversations": [
            {"images": images, "user": prompt, "assistant": class_name}]})
    with open(out / "ucf101_train.jsonl", "wb") as handle:
        handle.writelines(orjson.dumps(line) + b"\n" for line in lines)


def phiv_convert(src: Path, out: Path, backend: str = "auto", workers: int = 1) -> None:
    ucf101.convert(src, out, ucf101.Options(backend=backend),
                   RunOptions(workers=workers, progress=False))


def timed(function: Any, *args: Any, **kwargs: Any) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its finished children)."""
    before_wall = time.perf_counter()
    before = os.times()
    function(*args, **kwargs)
    after = os.times()
    cpu = (after.user - before.user + after.system - before.system
           + after.children_user - before.children_user
           + after.children_system - before.children_system)
    return time.perf_counter() - before_wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="*", default=None,
                        help="worker counts for the scaling table (default 1..all cores)")
    parser.add_argument("--backends", nargs="*", default=["pyav", "opencv", "decord"])
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "phiv-bench-ucf101")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    src = make_clips(args.workdir, args.clips)
    megabytes = sum(path.stat().st_size for path in src.rglob("*.avi")) / 1e6
    print(f"{args.clips} clips, 320x240, 175 frames, XviD + MP3, keyframe every 250 frames, "
          f"{megabytes / args.clips * 1000:.0f} kB each; {usable_cores()} usable cores")
    scratch = args.workdir / "out"
    all_cores = os.sched_getaffinity(0)
    first_core = min(all_cores)

    variants = {"recipe": lambda out: recipe_convert(src, out)}
    for backend in args.backends:
        variants[f"phiv {backend}"] = lambda out, backend=backend: phiv_convert(src, out, backend)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    cpu_rates: dict[str, list[float]] = {name: [] for name in variants}
    os.sched_setaffinity(0, {first_core})
    try:
        for _ in range(args.repeats):
            for name, run in variants.items():
                shutil.rmtree(scratch, ignore_errors=True)
                wall, cpu = timed(run, scratch)
                rates[name].append(args.clips / wall)
                cpu_rates[name].append(args.clips / cpu)
    finally:
        os.sched_setaffinity(0, all_cores)
    single = {name: statistics.median(values) for name, values in rates.items()}
    single_cpu = {name: statistics.median(values) for name, values in cpu_rates.items()}
    print(f"\none core (pinned), median of {args.repeats} alternating rounds:")
    print(f"{'variant':14s} {'videos/s':>9s} {'per CPU-s':>10s} {'vs recipe':>10s}")
    for name in variants:
        print(f"{name:14s} {single[name]:9.2f} {single_cpu[name]:10.2f} "
              f"{single[name] / single['recipe']:9.2f}x")

    worker_counts = args.workers or list(range(1, usable_cores() + 1))
    scaling: dict[int, float] = {}
    for workers in worker_counts:
        values = []
        for _ in range(args.repeats):
            shutil.rmtree(scratch, ignore_errors=True)
            wall, _ = timed(phiv_convert, src, scratch, "auto", workers)
            values.append(args.clips / wall)
        scaling[workers] = statistics.median(values)
    print("\nphiv scaling (unpinned, pool start included):")
    for workers, rate in scaling.items():
        print(f"workers={workers}: {rate:7.2f} videos/s ({rate / scaling[worker_counts[0]]:.2f}x)")
    shutil.rmtree(scratch, ignore_errors=True)

    if args.json:
        args.json.write_text(json.dumps({
            "clips": args.clips, "repeats": args.repeats, "host": platform.node(),
            "cores": usable_cores(), "one_core_videos_per_s": single,
            "one_core_videos_per_cpu_s": single_cpu, "scaling_videos_per_s": scaling,
        }, indent=2))


if __name__ == "__main__":
    main()
