"""Rows per second of the DocVQA, NLVR2 and Hateful Memes converters on realistic inputs.

Generates each dataset's native tree (DocVQA pages 1700x2250 grayscale PNG with about four
questions per page; NLVR2 photo pairs, 640x480, two sentences per pair, one left image in
ten a JPEG named .png; memes 600x500 RGB PNG), then converts it in one run with:

- ``floor``: the least any converter must do, in one process: parse the annotation rows,
  copy each image once, write one JSON line per row (no image decoding, no journal, no
  resume, no report). The baseline.
- ``floor+decode``: ``floor`` plus decoding each image once with Pillow, as a careful
  one-off script would to keep broken images out: the baseline for ``phiv w=1``, which does
  the same work plus journal, atomic writes, manifest and report.
- ``phiv w=N``: ``phiv_data.convert.<dataset>.convert`` with N workers (images decoded
  once per worker to prove they are readable, journal, manifest, report).
- ``phiv verify``: 1 worker, ``--check-images verify`` (PNG chunk checksums instead of a
  full decode).
- ``phiv link``: 1 worker, ``--link`` (hard links instead of copies).

Every phiv variant starts with empty per-process caches (``native_images.clear_caches``).
Each variant runs ``--repeat`` times; the best time counts (the machine may be shared).

Usage::

    python bench/convert.py                      # default sizes, workers 1 and 2, best of 3
    python bench/convert.py --scale 0.2 --workers 1
    python bench/convert.py --json bench-convert.json

Timings exclude generating the inputs. The first run of each dataset also warms the page
cache, so every variant reads images from memory.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the native-tree factories live with the tests

from native_factories import (
    make_docvqa_tree,
    make_hateful_memes_tree,
    make_nlvr2_tree,
)

from phiv_data.convert import docvqa, hateful_memes, nlvr2
from phiv_data.convert.framework import RunOptions
from phiv_data.convert.native_images import clear_caches


def build(dataset: str, root: Path, scale: float) -> int:
    """Write the native tree; return its number of rows."""
    if dataset == "docvqa":
        questions = max(8, int(400 * scale))
        make_docvqa_tree(root, splits={"train": questions}, page_size=(1700, 2250),
                         pages_per_split=max(2, questions // 4))
        return questions
    if dataset == "nlvr2":
        pairs = max(4, int(300 * scale))
        make_nlvr2_tree(root, splits={"train": pairs}, image_size=(640, 480),
                        jpeg_as_png=pairs // 10)
        return pairs * 2
    memes = max(8, int(600 * scale))
    make_hateful_memes_tree(root, files={"train": memes}, image_size=(600, 500))
    return memes


def floor_convert(dataset: str, src: Path, out: Path, decode: bool = False) -> int:
    """The baseline: rows -> JSON lines and each image copied once (and decoded once with
    ``decode``), nothing else checked."""
    from PIL import Image

    out.mkdir(parents=True)
    copied: set[str] = set()
    rows = 0

    def copy(source: Path, name: str) -> str:
        if name not in copied:
            if decode:
                with Image.open(source) as image:
                    image.load()
            (out / "images" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, out / "images" / name)
            copied.add(name)
        return name

    with open(out / "records.jsonl", "w", encoding="utf-8") as handle:
        if dataset == "docvqa":
            annotation = src / "train" / "train_v1.0_withQT.json"
            items = json.loads(annotation.read_text())["data"]
            lines = [(item, [copy(annotation.parent / item["image"],
                                  "train/" + Path(item["image"]).name)]) for item in items]
        elif dataset == "nlvr2":
            lines = []
            for raw in (src / "train.json").read_text().split("\n"):
                if raw:
                    row = json.loads(raw)
                    pair = row["identifier"].rsplit("-", 1)[0]
                    folder = src / "images" / "train" / str(row["directory"])
                    lines.append((row, [copy(folder / f"{pair}-img{side}.png",
                                             f"train/{pair}-img{side}.png") for side in (0, 1)]))
        else:
            lines = []
            for raw in (src / "train.jsonl").read_text(encoding="utf-8").split("\n"):
                if raw:
                    row = json.loads(raw)
                    lines.append((row, [copy(src / row["img"], row["img"])]))
        for row, images in lines:
            handle.write(json.dumps({"images": images, "row": row}, ensure_ascii=False) + "\n")
            rows += 1
    return rows


MODULES: dict[str, Any] = {"docvqa": docvqa, "nlvr2": nlvr2, "hateful-memes": hateful_memes}


def best_time(function: Callable[[], Any], cleanup: Callable[[], Any], repeat: int) -> float:
    """The best of ``repeat`` timed calls, ``cleanup`` (untimed) after each."""
    best = float("inf")
    for _ in range(repeat):
        clear_caches()
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
        cleanup()
    return best


def run(dataset: str, scale: float, workers: list[int], work: Path, repeat: int = 3
        ) -> list[dict[str, Any]]:
    src = work / f"{dataset}-src"
    started = time.perf_counter()
    rows = build(dataset, src, scale)
    size = sum(path.stat().st_size for path in src.rglob("*") if path.is_file())
    print(f"{dataset}: {rows} rows, {size / 1e6:.1f} MB of input "
          f"(generated in {time.perf_counter() - started:.1f}s)", flush=True)
    module = MODULES[dataset]
    results = []

    def record(variant: str, seconds: float) -> None:
        results.append({"dataset": dataset, "variant": variant, "rows": rows,
                        "seconds": round(seconds, 3), "rows_per_second": round(rows / seconds, 1)})
        print(f"  {variant:<10} {seconds:8.2f}s {rows / seconds:9.1f} rows/s", flush=True)

    out = work / "out"
    remove = functools.partial(shutil.rmtree, out)
    floor_convert(dataset, src, out)  # page cache warm for every variant
    remove()
    for variant, decode in (("floor", False), ("floor+decode", True)):
        record(variant, best_time(functools.partial(floor_convert, dataset, src, out, decode),
                                  remove, repeat))
    variants = [(f"phiv w={count}", module.Options(), count) for count in workers]
    variants += [("phiv verify", module.Options(check="verify"), 1),
                 ("phiv link", module.Options(link=True), 1)]
    for variant, options, count in variants:
        run_options = RunOptions(workers=count, progress=False)
        record(variant, best_time(functools.partial(module.convert, src, out, options,
                                                    run_options), remove, repeat))
    shutil.rmtree(src, ignore_errors=True)
    floor, decoding = results[0]["rows_per_second"], results[1]["rows_per_second"]
    for entry in results:
        entry["ratio_to_floor"] = round(entry["rows_per_second"] / floor, 3)
        entry["ratio_to_floor_decode"] = round(entry["rows_per_second"] / decoding, 3)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--datasets", nargs="+", default=list(MODULES), choices=list(MODULES))
    parser.add_argument("--scale", type=float, default=1.0,
                        help="1.0 = 400 DocVQA questions, 600 NLVR2 sentences, 600 memes")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--device", default="cpu", help="unused: conversion runs on CPU")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="phiv-bench-convert-") as temp:
        for dataset in args.datasets:
            results += run(dataset, args.scale, args.workers, Path(temp), args.repeat)
    print("\n| dataset | variant | rows | seconds | rows/s | x floor | x floor+decode |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for entry in results:
        print(f"| {entry['dataset']} | {entry['variant']} | {entry['rows']} | "
              f"{entry['seconds']:.2f} | {entry['rows_per_second']:.0f} | "
              f"{entry['ratio_to_floor']:.3f} | {entry['ratio_to_floor_decode']:.2f} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"\n{os.cpu_count()} cores, load average {load}")
    if args.json:
        args.json.write_text(json.dumps({"host": platform.node(), "cores": os.cpu_count(),
                                         "load_average": load,
                                         "python": platform.python_version(),
                                         "results": results}, indent=1))


if __name__ == "__main__":
    main()
