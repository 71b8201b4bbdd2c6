"""Convert your own dataset the recipe's way, done with phiv.

The recipe's guide converts a video-classification folder (UCF-101) into
``OUT/images/{split}/{Class}/...`` plus ``OUT/<name>_{split}.jsonl`` with ids
``{split}-{i:010d}`` and a prompt listing the sorted class names. This example does the
same for an image-classification folder of your own::

    SRC/train/<Class>/*.jpg|png     SRC/val/<Class>/...     SRC/test/<Class>/...

    python examples/custom_dataset.py --src my_photos/ --out data/my_photos
    python examples/custom_dataset.py --out data/demo        # on a generated demo folder

A converter is two things: a *plan* (every unit of work, in a deterministic order) and a
*pure row function* from one unit to one record plus the files to write. phiv's converter
framework (``phiv_data.convert.framework``) does the rest: atomic output, a manifest written
last, resume after a crash (rerun the same command), parallel workers, a report of every
skipped item. Then the result is validated (images decoded) and the outcome recorded in the
manifest, which is what ``phiv-train`` checks before it trains on the shards (the same as
``phiv-data validate OUT/*.jsonl --check-images decode``).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path

from PIL import Image

from phiv_data import Record, Turn
from phiv_data.convert.framework import (
    Converted,
    MediaFile,
    Plan,
    RunOptions,
    Skipped,
    WorkItem,
    run_conversion,
)
from phiv_data.validate import ValidationOptions, record_validation, validate_paths

NAME = "my_photos"
PROMPT = "Classify the image into one of the following classes: {classes}."
SPLITS = ("train", "val", "test")
SUFFIXES = {".jpg", ".jpeg", ".png"}


def build_plan(src: Path, *, link: bool = False) -> Plan:
    """Every image of every split, in a fixed order (split, class, file name)."""
    classes = sorted({folder.name for split in SPLITS if (src / split).is_dir()
                      for folder in (src / split).iterdir() if folder.is_dir()})
    prompt = PROMPT.format(classes=", ".join(classes))
    items = []
    for split in SPLITS:
        files = sorted(path for path in (src / split).glob("*/*")
                       if path.suffix.lower() in SUFFIXES)
        for index, path in enumerate(files):
            relative = path.relative_to(src).as_posix()      # train/Cat/0001.jpg
            items.append(WorkItem(key=relative, split=split, where=relative, payload={
                "id": f"{split}-{index:010d}", "source": str(path), "image": relative,
                "label": path.parent.name}))
    return Plan(dataset=NAME, items=items,
                process=functools.partial(image_to_record, prompt=prompt, link=link),
                options={"prompt": prompt},
                shard_names={split: f"{NAME}_{split}.jsonl" for split in SPLITS},
                notes=[f"{len(classes)} classes: {', '.join(classes)}"], unit="images")


def image_to_record(item: WorkItem, *, prompt: str, link: bool = False) -> Converted | Skipped:
    """The pure row function: one image file -> one record and the image to place."""
    payload = item.payload
    try:
        with Image.open(payload["source"]) as image:
            image.verify()  # reads the whole file without keeping the pixels
    except (OSError, SyntaxError) as error:
        return Skipped("unreadable-image", f"{payload['source']}: {error}")
    record = Record(id=payload["id"], source=NAME, conversations=[
        Turn(images=[payload["image"]], user=prompt, assistant=payload["label"])])
    return Converted(record, [MediaFile(path=payload["image"], source=payload["source"],
                                        link=link)])


def make_demo_source(src: Path) -> Path:
    """A tiny folder in the expected layout (two classes, one unreadable file)."""
    for offset, (split, count) in enumerate([("train", 3), ("val", 1), ("test", 1)]):
        for label, colour in [("Cat", "orange"), ("Dog", "brown")]:
            folder = src / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                size = (48 + index + 8 * offset, 40)  # distinct images: no train/test leak
                Image.new("RGB", size, colour).save(folder / f"{index:04d}.jpg")
    (src / "train" / "Dog" / "broken.jpg").write_bytes(b"not an image")
    return src


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, help="your dataset folder (default: a demo)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--link", action="store_true", help="hard-link images, do not copy")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="phiv-demo-src-") as scratch:
        src = args.src or make_demo_source(Path(scratch) / NAME)
        report = run_conversion(build_plan(src, link=args.link), args.out,
                                RunOptions(workers=args.workers, progress=False,
                                           command="examples/custom_dataset.py"))
    print(report.summary())
    validation = validate_paths(sorted(args.out.glob("*.jsonl")),
                                ValidationOptions(check_images="decode"))
    record_validation(validation)
    print(validation.render_text())
    return 0 if validation.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
