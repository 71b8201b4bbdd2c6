"""Benchmark ``phiv-data preview`` against a bare orjson parse of the same file.

Generates UCF-101-shaped datasets (8 frames per record, the recipe's 10-class prompt) of
each size in ``--lines``, then times, in the same run and each as a fresh process (best of
``--repeat``):

- baseline: ``python -c`` reading the file line by line with ``orjson.loads``;
- ``phiv-data preview FILE --out report.html --max-length 8192`` (default sample of 50
  records shown and validated with their images decoded, 1000 records measured).

It also reports the preview process's peak memory (max RSS) and the page size: both
should stay flat as the file grows, since only the samples are kept. Records cycle
through a pool of real frame files (``--videos`` videos x 8 frames of 320x240), so the
thumbnails, header reads and decode checks do real work.

Usage::

    python bench/preview.py --lines 100000 1000000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from PIL import Image

CLASSES = ["ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam",
           "BandMarching", "BaseballPitch", "Basketball", "BasketballDunk", "BenchPress"]
PROMPT = "Classify the video into one of the following classes: " + ", ".join(CLASSES) + "."
FRAMES = 8
BASELINE = ("import orjson, sys\n"
            "with open(sys.argv[1], 'rb') as handle:\n"
            "    for line in handle:\n"
            "        orjson.loads(line)\n")


def frames_of(video: int) -> list[str]:
    label = CLASSES[video % len(CLASSES)]
    return [f"train/{label}/v_{label}_{video:05d}.{k}.jpg" for k in range(FRAMES)]


def make_dataset(root: Path, lines: int, videos: int) -> Path:
    images = root / "images"
    if not images.is_dir():
        for video in range(videos):
            for k, frame in enumerate(frames_of(video)):
                path = images / frame
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (320, 240), (video * 7 % 256, k * 30, 90)).save(path, "JPEG")
    shard = root / f"ucf101_train_{lines}.jsonl"
    with open(shard, "wb") as handle:
        for index in range(lines):
            video = index % videos
            handle.write(orjson.dumps({
                "id": f"train-{index:010d}", "source": "ucf101",
                "conversations": [{"images": frames_of(video), "user": PROMPT,
                                   "assistant": CLASSES[video % len(CLASSES)]}]}) + b"\n")
    return shard


def timed(command: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - started)
    return best


def peak_rss_mb(command: list[str]) -> float:
    """Max RSS of one run of ``command`` (measured in a child that runs only it)."""
    probe = ("import resource, subprocess, sys\n"
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    output = subprocess.run([sys.executable, "-c", probe, *command], check=True,
                            capture_output=True, text=True).stdout
    return int(output.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="phiv-bench-preview-") as scratch:
        root = Path(scratch)
        print(f"{'records':>9} {'MB':>6} {'parse s':>8} {'preview s':>9} {'ratio':>6} "
              f"{'peak MB':>8} {'page MB':>8}")
        for lines in args.lines:
            shard = make_dataset(root, lines, args.videos)
            page = root / "report.html"
            preview = [sys.executable, "-m", "phiv_data", "preview", str(shard), "--out",
                       str(page), "--max-length", "8192"]
            parse = timed([sys.executable, "-c", BASELINE, str(shard)], args.repeat)
            took = timed(preview, args.repeat)
            print(f"{lines:>9} {shard.stat().st_size / 1e6:>6.0f} {parse:>8.2f} {took:>9.2f} "
                  f"{took / parse:>6.1f} {peak_rss_mb(preview):>8.0f} "
                  f"{page.stat().st_size / 1e6:>8.2f}", flush=True)
            os.remove(shard)


if __name__ == "__main__":
    main()
