"""``phiv-data demo``: the whole data path on a small embedded default, on any machine.

It writes a small UCF-101-style tree of synthetic videos (the recipe's subset layout, XviD
AVI with an MP3 track like the real clips, one class whose files are spelled differently
from its folder like ``HandstandPushups``), converts it with ``phiv-data convert ucf101``,
validates the result with images decoded, and prints where everything is. Needs only
``pip install "phiv[video]"``; nothing is downloaded. Rerunning it reuses what is there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

DEMO_CLASSES = {"ApplyEyeMakeup": "ApplyEyeMakeup", "BabyCrawling": "BabyCrawling",
                "HandstandPushups": "HandStandPushups"}
"""Folder name -> the spelling used in its file names (as in the real dataset)."""
DEMO_SPLITS = {"train": (8, 9, 10), "val": (21,), "test": (1,)}
"""Split -> the groups gGG of its clips (one clip per group and class)."""


def write_synthetic_clip(path: str | Path, *, frames: int = 48, width: int = 160,
                         height: int = 120, fps: int = 25, seed: int = 0,
                         keyframe_interval: int = 250, audio: bool = True) -> Path:
    """Write an XviD (MPEG-4 Part 2) AVI of a textured scene with a moving disc.

    The content has UCF-101-like statistics (texture, motion, a little noise), so it also
    serves benchmarks. The file appears atomically (written to a temporary name first).

    Args:
        path: destination .avi (parent directories are created).
        frames, width, height, fps: the clip's shape (even width and height).
        seed: varies texture, colour and motion.
        keyframe_interval: GOP length (UCF-101 clips: 250, one or two keyframes a clip).
        audio: add a mono MP3 track, like most UCF-101 clips.

    Returns:
        The path.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((8, 8, 1), dtype=np.uint8))  # blocky, cheap "scene"
    colour = rng.integers(40, 256, 3)
    rows, columns = np.mgrid[0:height, 0:width]
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with av.open(str(temporary), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_tag = "XVID"
        stream.codec_context.gop_size = keyframe_interval
        stream.codec_context.bit_rate = width * height * fps // 4
        sound = container.add_stream("libmp3lame", rate=22050) if audio else None
        if sound is not None:
            sound.layout = "mono"
        samples, shift = 0, None
        for index in range(frames):
            dx = int(8 + 6 * np.sin(index / 9 + seed)) % 8
            dy = int(8 + 6 * np.cos(index / 11 + seed)) % 8
            picture = texture[dy:dy + height, dx:dx + width].copy()
            centre_x = (index * 3 + seed * 17) % width
            centre_y = height // 2 + int(height / 4 * np.sin(index / 7))
            picture[(columns - centre_x) ** 2 + (rows - centre_y) ** 2 < (height // 6) ** 2] = colour
            picture = np.clip(picture + rng.integers(-4, 5, picture.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(stream.encode(frame))
            while sound is not None and samples + 1152 <= (index + 1) * 22050 // fps:
                tone = (np.sin(np.arange(samples, samples + 1152) / 15.0) * 2000).astype(np.int16)
                chunk = av.AudioFrame.from_ndarray(tone[None, :], format="s16", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = 22050, samples, Fraction(1, 22050)
                for packet in sound.encode(chunk):
                    shift = -min(packet.pts, 0) if shift is None else shift  # MP3 priming
                    packet.pts += shift
                    packet.dts = packet.pts
                    container.mux(packet)
                samples += 1152
        container.mux(stream.encode())
    os.replace(temporary, path)
    return path


def build_demo_tree(root: str | Path) -> tuple[Path, int]:
    """Write the demo's UCF-101-style source tree (skipped when already complete).

    Returns:
        ``(root, number of videos)``.
    """
    root = Path(root)
    done = root / ".complete"
    count = 0
    for split, groups in DEMO_SPLITS.items():
        for class_index, (folder, spelling) in enumerate(DEMO_CLASSES.items()):
            for group in groups:
                path = root / split / folder / f"v_{spelling}_g{group:02d}_c01.avi"
                if not done.is_file() or not path.is_file():
                    write_synthetic_clip(path, frames=40 + 4 * group % 17,
                                         seed=class_index * 100 + group)
                count += 1
    done.write_text("complete\n")
    return root, count


def validate_output(out: Path, *, workers: int | None = None) -> Any:
    """Validate every shard of a converted dataset with its images decoded
    (``phiv-data validate --check-images decode``); returns the validation report."""
    from phiv_data.validate import ValidationOptions, validate_paths

    return validate_paths(sorted(out.glob("*.jsonl")),
                          ValidationOptions(check_images="decode", workers=workers))


def _describe(validation: Any) -> str:
    records = sum(summary.records for summary in validation.files)
    images = sum(summary.images for summary in validation.files)
    return (f"{len(validation.files)} files, {records} records, {images} images decoded, "
            f"{validation.errors} errors, {validation.warnings} warnings")


def run_demo(out: str | Path = "phiv-demo", *, workers: int | None = None,
             echo: Callable[[str], Any] = print) -> Path:
    """Build, convert and validate the demo; print where the result is.

    Args:
        out: the demo directory (source videos in ``UCF101_subset/``, output in ``ucf101/``).
        workers: conversion workers (default: every usable core).
        echo: where to print.

    Returns:
        The converted dataset directory.

    Raises:
        DataError: when the converted data does not validate (a bug worth reporting).
    """
    from phiv_data.convert import ucf101
    from phiv_data.convert.framework import RunOptions
    from phiv_data.errors import DataError, display_path

    out = Path(out)
    source, videos = build_demo_tree(out / "UCF101_subset")
    echo(f"demo: {videos} synthetic UCF-101-style videos in {display_path(source)}")
    dataset = out / "ucf101"
    report = ucf101.convert(source, dataset, ucf101.Options(),
                            RunOptions(workers=workers, command="phiv-data demo"))
    echo(report.summary())
    validation = validate_output(dataset, workers=workers)
    if not validation.ok:
        echo(validation.render_text())
        raise DataError(f"the demo output does not validate: {_describe(validation)}",
                        hint="please report this as a bug")
    from phiv_data.validate import record_validation

    record_validation(validation)  # the manifest now says so: phiv-train accepts the shards
    echo(f"validate --check-images decode: passed ({_describe(validation)})")
    echo(f"result: {display_path(dataset)} (ucf101_{{train,val,test}}.jsonl, images/, "
         "manifest.json)")
    echo(f"next: phiv-data validate {display_path(dataset / 'ucf101_train.jsonl')} "
         f"--images-root {display_path(dataset / 'images')} --check-images decode")
    return dataset
