"""UCF-101 action videos -> frame-sampled classification records (the recipe's example).

Source: UCF-101 (Soomro et al., 2012), https://www.crcv.ucf.edu/data/UCF101.php.

Input layouts (detected automatically; the one found is announced):

- The recipe's subset: ``SRC/{train,val,test}/<Class>/<video>``.
- The official release: ``SRC/<Class>/<video>`` (or ``SRC/UCF-101/<Class>/<video>``) with
  ``SRC/ucfTrainTestlist/`` holding ``classInd.txt`` ("1 ApplyEyeMakeup"),
  ``trainlist0F.txt`` ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1") and
  ``testlist0F.txt`` ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"), CRLF line endings,
  ``F`` = ``--fold`` 1, 2 or 3. A val split is carved from train by whole groups (the
  ``--val-groups`` highest group numbers gGG of the train list; 0 for none), so no group
  is ever in two splits.

The class is the folder name, never parsed from the file name (folder
``HandstandPushups`` holds ``v_HandStandPushups_*``). The prompt lists every class
(``--classes``, else ``classInd.txt``, else every class folder found), sorted, and is the
same for all splits.

Output (the recipe's layout)::

    OUT/images/{split}/{Class}/{video stem}.{k}.jpg      k = 0..N-1
    OUT/ucf101_{split}.jsonl                             split = train, val, test
    OUT/manifest.json

Ids are ``{split}-{i:010d}`` with ``i`` counting over all splits in train, val, test order
and videos sorted by path within a split (with 300 train clips the first val record is
``val-0000000300``); a skipped video keeps its number unused. Example line::

    {"id": "val-0000000300", "source": "ucf101", "conversations": [{"images":
     ["val/BabyCrawling/v_BabyCrawling_g21_c04.0.jpg", ...7 more], "user": "Classify the
     video into one of the following classes: ApplyEyeMakeup, ..., BenchPress.",
     "assistant": "BabyCrawling"}], "meta": {"video": "val/BabyCrawling/v_BabyCrawling_g21_c04.avi",
     "frame_indices": [0, 16, ...], "timestamps": [0.0, 0.64, ...], "fps": 25.0,
     "frame_count": 131, "frame_count_source": "container", "container_frame_count": 131,
     "sampling": "uniform", "backend": "pyav", "backend_version": "14.0.1"}}

Frame sampling is described in :mod:`phiv_data.media.video` (``--frames``, ``--sampling
uniform|center``, ``--backend``). Videos that cannot be read are skipped with their reason
(``unreadable``, ``empty``, ``truncated``, ``undecodable``, ``missing-video``,
``too-short`` with ``--short-videos skip``, ``duplicate-name``) in the report.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from phiv_data.convert.framework import (
    Converted,
    ConvertReport,
    MediaFile,
    Plan,
    RunOptions,
    Skipped,
    WorkItem,
    run_conversion,
)
from phiv_data.convert.prompts import UCF101_PROMPT
from phiv_data.convert.ucf101_layout import SPLITS, VideoEntry, find_videos
from phiv_data.errors import UsageError
from phiv_data.schema import Record, Turn

SHORT_VIDEO_POLICIES = ("repeat", "skip")


@dataclass(frozen=True)
class Options:
    """Options of ``phiv-data convert ucf101`` that decide the output.

    Attributes:
        frames: frames sampled per video (N).
        sampling: ``uniform`` (the recipe's floor(k*T/N)) or ``center``.
        backend: ``auto``, ``pyav``, ``opencv`` or ``decord``.
        max_side: shrink frames whose longer side exceeds this (default: keep the size).
        jpeg_quality: JPEG quality 1-95 (75 is the recipe's, Pillow's default).
        classes: keep only these classes (and list only them in the prompt).
        fold: official layout: which train/test list (1, 2 or 3).
        val_groups: official layout: how many train groups become val.
        prompt_template: the user text, with the field ``{classes}``.
        short_videos: videos with fewer than N frames: ``repeat`` frames or ``skip``.
    """

    frames: int = 8
    sampling: str = "uniform"
    backend: str = "auto"
    max_side: int | None = None
    jpeg_quality: int = 75
    classes: tuple[str, ...] | None = None
    fold: int = 1
    val_groups: int = 2
    prompt_template: str = UCF101_PROMPT
    short_videos: str = "repeat"


@dataclass(frozen=True)
class VideoTask:
    """The payload of one work item: a video and the record it becomes."""

    record_id: str
    video: str
    """Path relative to ``--src``, with '/' separators."""
    class_name: str
    split: str
    prompt: str
    src: str
    problem: tuple[str, str] | None = None
    """(reason, detail) when the video is known bad before decoding (missing, duplicate)."""


def _check_options(options: Options) -> None:
    from phiv_data.media.video import SAMPLING_METHODS

    if options.frames < 1:
        raise UsageError(f"--frames must be at least 1, not {options.frames}")
    if options.sampling not in SAMPLING_METHODS:
        raise UsageError(f"--sampling must be one of {', '.join(SAMPLING_METHODS)}, "
                         f"not {options.sampling!r}")
    if options.max_side is not None and options.max_side < 1:
        raise UsageError(f"--max-side must be at least 1, not {options.max_side}")
    if not 1 <= options.jpeg_quality <= 95:
        raise UsageError(f"--jpeg-quality must be in 1..95, not {options.jpeg_quality}")
    if options.short_videos not in SHORT_VIDEO_POLICIES:
        raise UsageError(f"--short-videos must be one of {', '.join(SHORT_VIDEO_POLICIES)}")
    try:
        options.prompt_template.format(classes="A, B")
    except (KeyError, IndexError, ValueError) as error:
        raise UsageError(f"--prompt-template {options.prompt_template!r} is not a template "
                         f"with the single field {{classes}}: {error!r}",
                         hint="write literal braces as {{ and }}") from None


def convert_video(item: WorkItem, *, options: Options, backend: str) -> Converted | Skipped:
    """The row function: sample one video's frames and build its record.

    Args:
        item: a work item whose payload is a :class:`VideoTask`.
        options: conversion options.
        backend: the resolved backend name.

    Returns:
        The record and its JPEG frames, or why the video was skipped.
    """
    from phiv_data.media.video import VideoError, encode_jpeg, sample_video

    task: VideoTask = item.payload
    if task.problem is not None:
        return Skipped(*task.problem)
    try:
        sampled = sample_video(Path(task.src) / task.video, options.frames, options.sampling,
                               backend)
    except VideoError as error:
        return Skipped(error.reason, error.message)
    if sampled.frame_count < options.frames and options.short_videos == "skip":
        return Skipped("too-short", f"{sampled.frame_count} frames < {options.frames} "
                       "(--short-videos skip)")
    jpegs: dict[int, bytes] = {}
    for index, frame in zip(sampled.indices, sampled.frames):
        if index not in jpegs:  # a short video repeats frames: encode each once
            jpegs[index] = encode_jpeg(frame, quality=options.jpeg_quality,
                                       max_side=options.max_side)
    stem = Path(task.video).stem
    paths = [f"{task.split}/{task.class_name}/{stem}.{k}.jpg" for k in range(len(sampled.indices))]
    meta = {
        "video": task.video, "frame_indices": sampled.indices,
        "timestamps": sampled.timestamps, "fps": sampled.probe.fps,
        "frame_count": sampled.frame_count, "frame_count_source": sampled.frame_count_source,
        "container_frame_count": sampled.probe.container_frame_count,
        "sampling": options.sampling, "backend": sampled.backend,
        "backend_version": sampled.backend_version,
    }
    record = Record(id=task.record_id, source="ucf101", meta=meta,
                    conversations=[Turn(images=paths, user=task.prompt,
                                        assistant=task.class_name)])
    media = [MediaFile(path, data=jpegs[index]) for path, index in zip(paths, sampled.indices)]
    return Converted(record, media, notes=sampled.notes)


def build_plan(src: str | Path, options: Options) -> Plan:
    """Find the videos under ``src`` and plan their conversion.

    Raises:
        UsageError: bad options, an unknown layout, unknown ``--classes``.
        DataError: a malformed split list (with file and line).
    """
    from phiv_data.media.video import backend_version, resolve_backend

    _check_options(options)
    backend = resolve_backend(options.backend)
    src = Path(src)
    layout = find_videos(src, fold=options.fold, val_groups=options.val_groups,
                         classes=options.classes)
    prompt = options.prompt_template.format(classes=", ".join(layout.prompt_classes))
    items: list[WorkItem] = []
    for split in SPLITS:
        seen: set[str] = set()
        for entry in layout.videos.get(split, []):
            items.append(_item(src, split, entry, len(items), prompt, seen))
    plan_options = {
        "frames": options.frames, "sampling": options.sampling, "backend": backend,
        "backend_version": backend_version(backend), "max_side": options.max_side,
        "jpeg_quality": options.jpeg_quality, "prompt": prompt,
        "short_videos": options.short_videos, "layout": layout.kind,
        "fold": options.fold if layout.kind == "official" else None,
        "val_groups": options.val_groups if layout.kind == "official" else None,
    }
    return Plan(dataset="ucf101", items=items,
                process=functools.partial(convert_video, options=options, backend=backend),
                options=plan_options,
                shard_names={split: f"ucf101_{split}.jsonl" for split in SPLITS},
                notes=layout.notes + [(f"frames: {options.frames} per video, {options.sampling}"
                                       f" sampling, backend {backend} "
                                       f"{backend_version(backend)}")],
                unit="videos",
                preload=("numpy", "PIL.Image", "phiv_data.media.video",
                         {"pyav": "av", "opencv": "cv2", "decord": "decord"}[backend], "av"))


def _item(src: Path, split: str, entry: VideoEntry, position: int, prompt: str,
          seen: set[str]) -> WorkItem:
    problem = None
    name = f"{entry.class_name}/{Path(entry.video).stem}"
    if entry.missing:
        problem = ("missing-video", f"listed in {entry.listed_in} but not found")
    elif name in seen:
        problem = ("duplicate-name", (f"another video of {split}/{entry.class_name} has the "
                                      f"stem {Path(entry.video).stem!r}; its frames would "
                                      "overwrite the other's"))
    seen.add(name)
    task = VideoTask(record_id=f"{split}-{position:010d}", video=entry.video,
                     class_name=entry.class_name, split=split, prompt=prompt,
                     src=str(src.resolve()), problem=problem)
    return WorkItem(key=f"{split}:{entry.video}", split=split, payload=task, where=entry.video)


def convert(src: str | Path, out: str | Path, options: Options | None = None,
            run: RunOptions | None = None, *, plan: Plan | None = None) -> ConvertReport:
    """Convert UCF-101 videos under ``src`` into ``out`` (see the module docstring).

    Args:
        src: the dataset folder (either layout).
        out: output folder (new or empty, or an unfinished run of the same command).
        options: what to produce.
        run: workers, fan-out part, progress, strictness.
        plan: an already built plan (from :func:`build_plan`), to avoid scanning twice.

    Returns:
        The report: records per split, skipped videos with reasons, changes.
    """
    plan = plan or build_plan(src, options or Options())
    return run_conversion(plan, out, run)
