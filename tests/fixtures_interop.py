"""Small phiv datasets built in code, for the preview, import/export and example tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from phiv_data import Record, write_records

COLOURS = ["red", "green", "blue", "orange", "purple", "gray", "teal", "navy"]


def make_image(path: Path, size: tuple[int, int] = (48, 32), colour: str = "red",
               fmt: str | None = None) -> Path:
    """Write a small solid-colour image (format from the suffix unless ``fmt``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, fmt)
    return path


def sample_records() -> list[dict[str, Any]]:
    """Records covering what a format must carry: several images per turn, multi-turn
    with images in a later turn, an unlabeled last turn, no images, meta, source, Unicode
    and control characters."""
    return [
        {"id": "r-0", "source": "demo", "conversations": [
            {"images": ["a/one.jpg", "a/two.png"], "user": "Which is larger?",
             "assistant": "The first."},
            {"images": ["b/three.jpg"], "user": "And this one?", "assistant": "Smaller."}],
         "meta": {"answers": ["The first.", "first"], "nested": {"k": [1, 2, None]}}},
        {"id": "r-1", "conversations": [
            {"images": [], "user": "No image here: just text \u00e9\u4e2d\u0001.",
             "assistant": "Right.\nSecond line."}]},
        {"id": "r-2", "source": "demo", "conversations": [
            {"images": ["a/one.jpg"], "user": "Describe it.", "assistant": None}]},
        {"id": "r-3", "conversations": [
            {"images": ["b/three.jpg", "a/one.jpg"], "user": "Same colour?", "assistant": "No"},
            {"images": [], "user": "Sure?", "assistant": "Yes"},
            {"images": [], "user": "Really?", "assistant": "Yes."}]},
    ]


def make_dataset(root: Path, records: list[dict[str, Any]] | None = None,
                 name: str = "demo_train.jsonl") -> Path:
    """Write ``root/<name>`` and every image it references under ``root/images``."""
    records = sample_records() if records is None else records
    images = sorted({path for record in records for turn in record["conversations"]
                     for path in turn["images"]})
    for index, image in enumerate(images):
        make_image(root / "images" / image, size=(40 + 8 * index, 30 + 4 * index),
                   colour=COLOURS[index % len(COLOURS)])
    shard = root / name
    write_records(shard, records)
    return shard


def read_back(path: Path) -> list[Record]:
    """Every record of a shard (fails on an invalid line)."""
    from phiv_data import read_records

    return [record for _, record in read_records(path)]
