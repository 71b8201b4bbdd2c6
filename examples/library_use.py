"""Use phiv's record format from your own pipeline: build, write, read and filter shards.

    python examples/library_use.py --out data/mine

Records are pydantic models (``from phiv_data import Record``): building one checks its
shape, and writing goes through an atomic writer that returns the shard's manifest entry.
Reading is lazy and yields each record with its line number.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from phiv_data import Manifest, Record, ShardWriter, Turn, read_records, save_manifest


def build_records(images: Path) -> list[Record]:
    """Three records: single image, two images then a follow-up turn, unlabeled."""
    for name, colour in [("cat.jpg", "orange"), ("dog.jpg", "brown"), ("sky.jpg", "blue")]:
        (images / "photos").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), colour).save(images / "photos" / name)
    return [
        Record(id="train-0000000000", source="mine", conversations=[
            Turn(images=["photos/cat.jpg"], user="What colour is this?", assistant="Orange.")]),
        Record(id="train-0000000001", source="mine", conversations=[
            Turn(images=["photos/cat.jpg", "photos/dog.jpg"],
                 user="Which picture is darker?", assistant="The second."),
            Turn(images=[], user="By how much?", assistant="A little.")],
            meta={"annotator": "a7"}),
        # An evaluation record: the last answer is unknown.
        Record.model_validate({"id": "train-0000000002", "source": "mine", "conversations": [
            {"images": ["photos/sky.jpg"], "user": "Describe the weather.",
             "assistant": None}]}),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)

    records = build_records(args.out / "images")
    with ShardWriter(args.out / "mine_train.jsonl", split="train") as writer:
        for record in records:
            writer.write(record)
    all_records = writer.shard
    save_manifest(args.out, Manifest(shards=[all_records]))  # written last

    labeled = []
    for line, record in read_records(args.out / "mine_train.jsonl"):
        print(f"line {line}: {record.id} with {len(record.images)} image(s), "
              f"{'labeled' if record.labeled else 'unlabeled'}")
        if record.labeled:
            labeled.append(record)
    # Derive a new shard: only the labeled records, turned into single-turn records.
    first_turns = [record.model_copy(update={"conversations": record.conversations[:1]})
                   for record in labeled]
    with ShardWriter(args.out / "mine_first_turns.jsonl", split="train") as writer:
        writer.write_all(first_turns)
    save_manifest(args.out, Manifest(shards=[all_records, writer.shard]))
    print(f"wrote {writer.shard.records} records to {args.out / 'mine_first_turns.jsonl'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
