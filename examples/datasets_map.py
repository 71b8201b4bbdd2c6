"""Run a converter's row function at scale with Hugging Face ``datasets.map(num_proc=...)``.

``phiv-data convert hateful-memes`` does all of this for you. This example shows the pattern
for when your rows already live in an engine with a parallel map (here ``datasets``; Spark,
Beam or Ray work the same way): every phiv converter exposes a pure function from one native
row to one record, and ``phiv_data.interop.engines`` turns it into a map function that never
drops a row (a failed row comes back with its reason) and writes the result as a phiv shard.

    python examples/datasets_map.py --src hateful_memes/ --out data/memes --num-proc 8

reads ``SRC/<split>.jsonl`` (local files only) and writes ``OUT/hateful_memes_<split>.jsonl``
with ``OUT/manifest.json``; image paths stay relative to SRC (the manifest's images root),
so no image is copied.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets

from phiv_data import Manifest, Record, save_manifest
from phiv_data.convert.hateful_memes import hateful_memes_record
from phiv_data.interop.engines import RecordMapper, write_mapped
from phiv_data.shards import relative_posix


def meme_record(row: Mapping[str, Any], index: int, *, split: str) -> Record:
    """(native row, position) -> record: the converter's pure row function, with the same
    ids as ``phiv-data convert`` (``{split}-{index:010d}``) and the image where it is."""
    return hateful_memes_record(row, record_id=f"{split}-{index:010d}", image=row["img"])


def convert_split(annotation: Path, out: Path, *, num_proc: int, cache_dir: Path):
    """Map one ``<split>.jsonl`` file with ``num_proc`` processes and write its shard."""
    split = annotation.stem
    dataset = datasets.load_dataset("json", data_files=str(annotation), split="train",
                                    cache_dir=str(cache_dir))
    mapper = RecordMapper(functools.partial(meme_record, split=split))
    mapped = dataset.map(mapper, with_indices=True, num_proc=num_proc,
                         remove_columns=dataset.column_names, desc=f"converting {split}")
    return write_mapped(mapped, out / f"hateful_memes_{split}.jsonl", split=split,
                        images_root=relative_posix(annotation.parent, out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, required=True, help="the hateful_memes folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--num-proc", type=int, default=2, help="processes for datasets.map")
    args = parser.parse_args(argv)
    datasets.disable_progress_bars()
    manifest = Manifest(producer={"command": "examples/datasets_map.py",
                                  "num_proc": args.num_proc})
    failed = 0
    with tempfile.TemporaryDirectory(prefix="phiv-datasets-cache-") as cache_dir:
        for annotation in sorted(args.src.glob("*.jsonl")):
            report = convert_split(annotation, args.out, num_proc=args.num_proc,
                                   cache_dir=Path(cache_dir))
            manifest.shards.append(report.shard)
            for index, reason in report.problems:
                print(f"{annotation}: row {index}: {reason}")
            failed += len(report.problems)
            print(f"{annotation.name}: {report.written} records, {len(report.problems)} failed")
    save_manifest(args.out, manifest)  # last: its presence means the output is complete
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
