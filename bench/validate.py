"""Benchmark ``phiv-data validate`` against a bare orjson parse of the same file.

Generates a UCF-101-shaped dataset (8 frames per record, the recipe's 10-class prompt),
then times, in the same run and each as a fresh process (best of ``--repeat``):

- baseline: ``python -c`` reading the file line by line with ``orjson.loads``;
- ``phiv-data validate FILE --workers 1`` (default ``--check-images exists``, manifest
  written): the end-to-end speed figure;
- the same with every core (``--workers N``);
- ``--check-images none`` with one worker (schema and rules only, no file-system work);
- ``--check-images decode`` on a smaller file whose every image is distinct (noisy
  320x240 JPEGs, UCF-101's frame size): images/s;
- ``phiv-data validate --codes`` (start-up only: imports) and ``python -c "import orjson"``,
  to give the per-line cost with each side's start-up taken off;
- the bare parse and ``validate --workers 1`` of the same records as phiv's UCF-101
  converter writes them, with their ``meta`` (frame provenance, about 300 bytes a line);
- the same for records whose frames come from a pool as large as UCF-101's train split
  (``--large-pool`` videos, 76,000 frames, hard links to the real ones): each existence
  check is still one set lookup, but in a set too large for the CPU caches.

The fair comparison: the bare parse touches no image, so the ``exists`` figure includes
work the baseline does not do (one set lookup per image reference after listing each
frame directory once); the ``none`` row isolates parsing, schema and rules. Records cycle
through a pool of real frame files (``--videos`` videos x 8 frames) so that ``exists``
finds every image without writing millions of files; the lookup cost per reference is the
same whether a frame is referenced once or many times, but not whatever the size of the
pool: a larger set of known files misses the CPU caches more (the ``--large-pool`` row).

It also measures, in-process, the serial part of a ``--workers N`` run that more cores
cannot shorten: the time from the last chunk's result reaching the parent to the report
(merging, sorting, the manifest's sha256 thread joining), next to the whole run.

With ``--interleave N`` it then runs N rounds, each a bare parse, ``validate --workers 1``
and ``validate --workers 1 --check-images none`` in turn, and prints the best and the
median of each: on a machine shared with other work, alternating keeps the load the same
for both sides of a ratio.

Usage::

    python bench/validate.py --lines 300000 --workers 2
    python bench/validate.py --lines 300000 --workers 2 --interleave 7
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from PIL import Image

CLASSES = ["ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam",
           "BandMarching", "BaseballPitch", "Basketball", "BasketballDunk", "BenchPress"]
PROMPT = ("Classify the video into one of the following classes: " + ", ".join(CLASSES) + ".")
FRAMES = 8

BASELINE = ("import orjson, sys\n"
            "with open(sys.argv[1], 'rb') as handle:\n"
            "    for line in handle:\n"
            "        orjson.loads(line)\n")


def video_frames(index: int) -> tuple[str, list[str]]:
    label = CLASSES[index % len(CLASSES)]
    stem = f"v_{label}_g{index // 7 % 25 + 1:02d}_c{index % 7 + 1:02d}_{index:05d}"
    return label, [f"train/{label}/{stem}.{k}.jpg" for k in range(FRAMES)]


def make_images(root: Path, videos: int, size: tuple[int, int]) -> None:
    """Distinct JPEG frames (a noise texture, so decoding costs what a real frame does)."""
    rng = random.Random(0)
    width, height = size
    texture = Image.effect_noise((width, height), 40).convert("RGB")
    for index in range(videos):
        _, frames = video_frames(index)
        for frame in frames:
            path = root / frame
            path.parent.mkdir(parents=True, exist_ok=True)
            image = texture.copy()
            image.paste((rng.randrange(256), rng.randrange(256), 0), (0, 0, 8, 8))
            image.save(path, quality=90)


def link_pool(root: Path, sources: Path, videos: int, source_videos: int) -> None:
    """Frames of ``videos`` videos under ``root``, each a hard link to one of the real JPEGs
    of the first ``source_videos`` (a pool as large as a real split's, without writing
    gigabytes): only the size of the set of known files differs from the small pool."""
    for index in range(videos):
        _, frames = video_frames(index)
        _, originals = video_frames(index % source_videos)
        for frame, original in zip(frames, originals):
            path = root / frame
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                os.link(sources / original, path)


def provenance(label: str, frames: list[str]) -> dict:
    """The ``meta`` phiv's UCF-101 converter writes (where the frames came from)."""
    indices = [k * 20 for k in range(len(frames))]
    return {"video": frames[0].rsplit(".", 2)[0] + ".avi", "frame_indices": indices,
            "timestamps": [index / 25 for index in indices], "fps": 25.0, "frame_count": 164,
            "frame_count_source": "container", "container_frame_count": 164,
            "sampling": "uniform", "backend": "pyav", "backend_version": "18.1.0"}


def make_jsonl(path: Path, lines: int, videos: int, meta: bool = False) -> None:
    with open(path, "wb") as handle:
        for index in range(lines):
            label, frames = video_frames(index % videos)
            record = {"id": f"train-{index:010d}", "source": "ucf101",
                      "conversations": [{"images": frames, "user": PROMPT, "assistant": label}]}
            if meta:
                record["meta"] = provenance(label, frames)
            handle.write(orjson.dumps(record) + b"\n")


# Let Python cache bytecode as an installed package does (some sandboxes set
# PYTHONDONTWRITEBYTECODE, which would add recompiling phiv to every run).
ENVIRONMENT = {key: value for key, value in os.environ.items()
               if key != "PYTHONDONTWRITEBYTECODE"}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], repeat: int, expect: int = 0) -> tuple[float, float]:
    """Best wall time and best CPU time (user + system, all threads and processes)."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        cpu = _children_cpu()
        started = time.perf_counter()
        completed = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   env=ENVIRONMENT, check=False)
        elapsed = time.perf_counter() - started
        if completed.returncode != expect:
            raise SystemExit(f"{' '.join(command)} exited {completed.returncode}: "
                             f"{completed.stderr.decode()[-2000:]}")
        best_wall = min(best_wall, elapsed)
        best_cpu = min(best_cpu, _children_cpu() - cpu)
    return best_wall, best_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--videos", type=int, default=1000, help="frame pool: videos x 8")
    parser.add_argument("--large-pool", type=int, default=9500,
                        help="videos (x8 frames) of the realistic pool row, UCF-101's train "
                             "split size; 0 skips the row")
    parser.add_argument("--decode-lines", type=int, default=500,
                        help="records (x8 distinct images) for the decode figure")
    parser.add_argument("--frame-size", default="320x240", help="WxH of the frames (UCF-101's)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--interleave", type=int, default=0,
                        help="rounds of parse / validate / validate none in turn (0: none)")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: temp)")
    parser.add_argument("--device", default="cpu",
                        help="accepted for uniform command lines; validation uses no GPU")
    args = parser.parse_args()

    work = Path(args.dir or tempfile.mkdtemp(prefix="phiv-bench-validate-"))
    work.mkdir(parents=True, exist_ok=True)
    frame_size = tuple(int(side) for side in args.frame_size.split("x"))
    make_images(work / "images", max(args.videos, args.decode_lines), frame_size)
    big = work / "ucf101_train.jsonl"
    make_jsonl(big, args.lines, args.videos)
    with_meta = work / "meta" / "ucf101_train.jsonl"
    with_meta.parent.mkdir(exist_ok=True)
    make_jsonl(with_meta, args.lines, args.videos, meta=True)
    large = work / "large" / "ucf101_train.jsonl"
    if args.large_pool:
        large.parent.mkdir(exist_ok=True)
        link_pool(large.parent / "images", work / "images", args.large_pool, args.videos)
        make_jsonl(large, args.lines, args.large_pool)
    small = work / "decode" / "ucf101_train.jsonl"
    small.parent.mkdir(exist_ok=True)
    make_jsonl(small, args.decode_lines, args.decode_lines)
    cli = [sys.executable, "-m", "phiv_data"]
    root = ["--images-root", str(work / "images")]
    size_mb = big.stat().st_size / 1e6

    load_before = os.getloadavg()[0]
    baseline = timed([sys.executable, "-c", BASELINE, str(big)], args.repeat)
    startup = timed(cli + ["validate", "--codes"], args.repeat)
    python_start = timed([sys.executable, "-c", "import orjson"], args.repeat)
    one = timed(cli + ["validate", str(big), "--workers", "1"] + root, args.repeat)
    every = timed(cli + ["validate", str(big), "--workers", str(args.workers)] + root,
                  args.repeat)
    none = timed(cli + ["validate", str(big), "--workers", "1", "--check-images", "none"],
                 args.repeat)
    meta_baseline = timed([sys.executable, "-c", BASELINE, str(with_meta)], args.repeat)
    meta_one = timed(cli + ["validate", str(with_meta), "--workers", "1"] + root, args.repeat)
    if args.large_pool:
        large_baseline = timed([sys.executable, "-c", BASELINE, str(large)], args.repeat)
        large_one = timed(cli + ["validate", str(large), "--workers", "1", "--images-root",
                                 str(large.parent / "images")], args.repeat)
    images = args.decode_lines * FRAMES
    decode_one = timed(cli + ["validate", str(small), "--workers", "1", "--check-images",
                              "decode"] + root, args.repeat)
    decode_all = timed(cli + ["validate", str(small), "--workers", str(args.workers),
                              "--check-images", "decode"] + root, args.repeat)

    print(f"file: {args.lines:,} lines, {size_mb:.0f} MB, {FRAMES} images per record; "
          f"{os.cpu_count()} CPUs, load average {load_before:.1f} before and "
          f"{os.getloadavg()[0]:.1f} after; best of {args.repeat}; ratios to the bare parse")
    print(f"{'':44}{'wall s':>8}{'lines/s':>11}{'wall':>7}{'CPU s':>8}{'CPU':>7}")
    rows = (("bare orjson parse (baseline)", baseline),
            ("phiv-data start-up only (validate --codes)", startup),
            ("validate --workers 1 (exists, default)", one),
            (f"validate --workers {args.workers} (exists)", every),
            ("validate --workers 1 --check-images none", none))
    for label, (wall, cpu) in rows:
        print(f"{label:<44}{wall:8.2f}{args.lines / wall:11,.0f}{wall / baseline[0]:6.2f}x"
              f"{cpu:8.2f}{cpu / baseline[1]:6.2f}x")
    meta_mb = with_meta.stat().st_size / 1e6
    for label, (wall, cpu) in (("bare parse, phiv's output with meta", meta_baseline),
                               ("validate --workers 1, phiv's output", meta_one)):
        print(f"{label:<44}{wall:8.2f}{args.lines / wall:11,.0f}"
              f"{wall / meta_baseline[0]:6.2f}x{cpu:8.2f}{cpu / meta_baseline[1]:6.2f}x"
              f"  ({meta_mb:.0f} MB; ratios to its own parse)")
    if args.large_pool:
        for label, (wall, cpu) in (("bare parse, frames of a larger pool", large_baseline),
                                   ("validate --workers 1, larger pool", large_one)):
            print(f"{label:<44}{wall:8.2f}{args.lines / wall:11,.0f}"
                  f"{wall / large_baseline[0]:6.2f}x{cpu:8.2f}{cpu / large_baseline[1]:6.2f}x"
                  f"  ({args.large_pool * FRAMES:,} known frames, not "
                  f"{args.videos * FRAMES:,}; ratios to its own parse)")
    print(f"scaling 1 -> {args.workers} workers (wall): {one[0] / every[0]:.2f}x faster")
    print(f"per line, start-up taken off both: --workers 1 costs "
          f"{(one[1] - startup[1]) / (baseline[1] - python_start[1]):.2f}x the parse's CPU, "
          f"--check-images none {(none[1] - startup[1]) / (baseline[1] - python_start[1]):.2f}x")
    net_one, net_all = decode_one[0] - startup[0], decode_all[0] - startup[0]
    print(f"decode, {images:,} distinct {args.frame_size} JPEGs, wall: --workers 1 "
          f"{images / decode_one[0]:,.0f} images/s ({images / net_one:,.0f} without start-up); "
          f"--workers {args.workers} {images / decode_all[0]:,.0f} images/s "
          f"({images / net_all:,.0f} without start-up)")
    if args.workers > 1:
        tail, total = serial_tail(big, work / "images", args.workers, args.repeat)
        print(f"serial part of --workers {args.workers} (in-process, median of {args.repeat}): "
              f"{tail * 1000:.0f} ms after the last chunk's result, of {total:.2f} s, plus "
              f"start-up {startup[0]:.2f} s")
    if args.interleave:
        interleaved({"bare orjson parse": [sys.executable, "-c", BASELINE, str(big)],
                     "validate --workers 1": cli + ["validate", str(big), "--workers", "1"]
                     + root,
                     "validate --workers 1 --check-images none": cli + [
                         "validate", str(big), "--workers", "1", "--check-images", "none"]},
                    args.interleave)
    if args.dir is None:
        shutil.rmtree(work)


def serial_tail(path: Path, root: Path, workers: int, repeat: int) -> tuple[float, float]:
    """Median seconds from the last chunk's result arriving to ``validate_paths`` returning,
    and median seconds of the whole call (process pool included)."""
    from concurrent.futures import Future

    from phiv_data.validate import ValidationOptions, validate_paths

    arrived = [0.0]
    result = Future.result

    def noted(self, timeout=None):  # every result the parent waits for, timed
        value = result(self, timeout)
        arrived[0] = time.perf_counter()
        return value

    tails, totals = [], []
    Future.result = noted
    try:
        for _ in range(repeat):
            started = time.perf_counter()
            validate_paths([path], ValidationOptions(workers=workers, images_root=root))
            ended = time.perf_counter()
            tails.append(ended - arrived[0])
            totals.append(ended - started)
    finally:
        Future.result = result
    return statistics.median(tails), statistics.median(totals)


def interleaved(commands: dict[str, list[str]], rounds: int) -> None:
    """Each command once per round, in turn; best and median wall and CPU per command."""
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            wall, cpu = timed(command, 1)
            walls[name].append(wall)
            cpus[name].append(cpu)
    base = next(iter(commands))
    print(f"interleaved, {rounds} rounds; ratios to the bare parse's best (median to median)")
    for name in commands:
        best, median = min(walls[name]), statistics.median(walls[name])
        print(f"{name:<44} wall best {best:.2f} s {best / min(walls[base]):.2f}x, median "
              f"{median:.2f} s {median / statistics.median(walls[base]):.2f}x; CPU best "
              f"{min(cpus[name]):.2f} s {min(cpus[name]) / min(cpus[base]):.2f}x")


if __name__ == "__main__":
    main()
