"""Every script in examples/ runs as documented and produces what it says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from native_factories import make_hateful_memes_tree

from phiv_data import load_manifest, read_records, verify_dataset

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TESTED = {"library_use.py", "custom_dataset.py", "datasets_map.py"}


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def records(path: Path) -> list:
    return [record for _, record in read_records(path)]


def test_every_example_is_tested():
    assert {path.name for path in EXAMPLES.glob("*.py")} == TESTED


def test_library_use(tmp_path: Path):
    result = run_example("library_use.py", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "line 3: train-0000000002 with 1 image(s), unlabeled" in result.stdout
    manifest = load_manifest(tmp_path)
    assert [(shard.file, shard.records, shard.unlabeled) for shard in manifest.shards] == [
        ("mine_train.jsonl", 3, 1), ("mine_first_turns.jsonl", 2, 0)]
    derived = records(tmp_path / "mine_first_turns.jsonl")
    assert [len(record.conversations) for record in derived] == [1, 1]
    assert all((tmp_path / "images" / image).is_file() for record in derived
               for image in record.images)


def test_custom_dataset_demo_and_rerun(tmp_path: Path):
    out = tmp_path / "out"
    result = run_example("custom_dataset.py", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "skipped: 1 item(s): unreadable-image 1" in result.stdout
    train = records(out / "my_photos_train.jsonl")
    assert len(train) == 6 and train[0].id == "train-0000000000"
    assert train[0].conversations[0].user == (
        "Classify the image into one of the following classes: Cat, Dog.")
    assert {record.conversations[0].assistant for record in train} == {"Cat", "Dog"}
    for record in train:
        assert (out / "images" / record.images[0]).is_file()
    manifest = load_manifest(out)
    assert [shard.records for shard in manifest.shards] == [6, 2, 2]
    assert all(shard.validation is not None and shard.validation.passed
               for shard in manifest.shards)
    verify_dataset(out)  # what phiv-train checks before training
    before = (out / "my_photos_train.jsonl").read_bytes()
    src = tmp_path / "src"
    # the same folder given explicitly converts into a new output identically
    subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'examples'); "
                    "from custom_dataset import make_demo_source; "
                    f"make_demo_source(__import__('pathlib').Path({str(src)!r}))"],
                   cwd=ROOT, check=True)
    again = run_example("custom_dataset.py", "--src", str(src), "--out", str(tmp_path / "b"))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "b/my_photos_train.jsonl").read_bytes() == before


def test_datasets_map_matches_the_converter_byte_for_byte(tmp_path: Path):
    from phiv_data.convert import hateful_memes
    from phiv_data.convert.framework import RunOptions

    src = tmp_path / "memes"
    make_hateful_memes_tree(src, files={"train": 4, "test_seen": 2})
    result = run_example("datasets_map.py", "--src", str(src), "--out", str(tmp_path / "map"),
                         "--num-proc", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    hateful_memes.convert(src, tmp_path / "conv", run=RunOptions(workers=1, progress=False))
    for split in ("train", "test_seen"):
        name = f"hateful_memes_{split}.jsonl"
        assert (tmp_path / "map" / name).read_bytes() == (tmp_path / "conv" / name).read_bytes()
    manifest = load_manifest(tmp_path / "map")
    entry = manifest.shard("hateful_memes_train.jsonl")
    root = (tmp_path / "map" / entry.images_root)
    for record in records(tmp_path / "map" / "hateful_memes_train.jsonl"):
        assert (root / record.images[0]).is_file()


def test_datasets_map_reports_bad_rows_and_keeps_the_others(tmp_path: Path):
    src = tmp_path / "memes"
    tree = make_hateful_memes_tree(src, files={"train": 3})
    rows = tree.rows["train"]
    rows[1]["label"] = "maybe"
    (src / "train.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    result = run_example("datasets_map.py", "--src", str(src), "--out", str(tmp_path / "map"),
                         "--num-proc", "2")
    assert result.returncode == 1
    assert "train.jsonl: row 1: RowProblem: label 'maybe'" in result.stdout
    assert "train.jsonl: 2 records, 1 failed" in result.stdout
    written = records(tmp_path / "map" / "hateful_memes_train.jsonl")
    assert [record.id for record in written] == ["train-0000000000", "train-0000000002"]


@pytest.mark.parametrize("name", sorted(TESTED))
def test_examples_document_how_to_run_them(name: str):
    text = (EXAMPLES / name).read_text()
    assert f"python examples/{name}" in text
