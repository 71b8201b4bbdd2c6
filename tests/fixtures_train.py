"""Factories for the trainer's tests: a tiny checkpoint and tiny validated datasets, in code.

The classification task is learnable in a few steps: a red or a blue image, and the answer
"red" or "blue". Images are small (the processor pads them to 336 pixels), num_crops 1 keeps
each sample near 330 tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from phiv_data.manifest import Manifest
from phiv_data.shards import ShardWriter, save_manifest

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
QUESTION = "Which colour is this image, red or blue?"


def make_image(path: Path, colour: str, size: tuple[int, int] = (48, 40)) -> None:
    """A flat image of one colour with a little texture (PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, COLOURS[colour])
    for x in range(0, size[0], 7):
        image.putpixel((x, x % size[1]), (255, 255, 255))
    image.save(path)


def colour_record(split: str, index: int, colour: str, *, labeled: bool = True) -> dict[str, Any]:
    """One record of the colour task with its image path (relative to ``images/``)."""
    return {"id": f"{split}-{index:010d}", "source": "colours",
            "conversations": [{"images": [f"{split}/{colour}/{index}.png"], "user": QUESTION,
                               "assistant": colour if labeled else None}]}


def validate_directory(directory: Path) -> None:
    """Validate every shard of ``directory`` with ``phiv-data validate``'s library and
    record the outcome in its manifest (what a user does before training)."""
    from phiv_data.validate import ValidationOptions, record_validation, validate_paths

    shards = sorted(str(path) for path in directory.glob("*.jsonl"))
    report = validate_paths(shards, ValidationOptions(check_images="decode", workers=1))
    assert report.ok, [str(issue) for issue in report.issues]
    record_validation(report)


def write_dataset(directory: Path, splits: dict[str, list[dict[str, Any]]], *,
                  validate: bool = True, name: str = "colours") -> Path:
    """Write ``{name}_{split}.jsonl`` shards, their images and the manifest; validate them.

    Records made by :func:`colour_record` get their image drawn; other records must point
    at images that already exist under ``directory/images``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    shards = []
    for split, records in splits.items():
        for record in records:
            for turn in record["conversations"]:
                for path in turn["images"]:
                    target = directory / "images" / path
                    if not target.exists():
                        make_image(target, path.split("/")[1] if path.count("/") == 2 else "red")
        with ShardWriter(directory / f"{name}_{split}.jsonl", split=split) as writer:
            writer.write_all(records)
        shards.append(writer.shard)
    save_manifest(directory, Manifest(shards=shards))
    if validate:
        validate_directory(directory)
    return directory


def colour_dataset(directory: Path, *, train: int = 8, val: int = 4, test: int = 0) -> Path:
    """The colour task with alternating labels: train/val labeled, test unlabeled."""
    colours = ["red", "blue"]
    splits = {"train": [colour_record("train", i, colours[i % 2]) for i in range(train)]}
    if val:
        splits["val"] = [colour_record("val", i, colours[i % 2]) for i in range(val)]
    if test:
        splits["test"] = [colour_record("test", i, colours[i % 2], labeled=False)
                          for i in range(test)]
    return write_dataset(directory, splits)


def base_arguments(checkpoint: Path, data: Path, output: Path, **overrides: Any) -> list[str]:
    """A fast phiv-train command line on the tiny model (CPU, fp32, no workers)."""
    options: dict[str, Any] = {
        "model": checkpoint, "data": data, "output-dir": output, "num-crops": 1,
        "batch-size": 2, "per-device-batch-size": 2, "max-steps": 4, "learning-rate": 5e-3,
        "warmup-steps": 0, "save-steps": 2, "logging-steps": 1, "dataloader-workers": 0,
        "max-new-tokens": 4, "seed": 7,
    }
    options.update(overrides)
    arguments = []
    for key, value in options.items():
        if value is None:
            continue
        if value is True:
            arguments.append(f"--{key}")
        elif value is False:
            arguments.append(f"--no-{key}")
        else:
            arguments += [f"--{key}", str(value)]
    return arguments
