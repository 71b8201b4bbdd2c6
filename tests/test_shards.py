"""Shards: atomic writes, lazy reading with line numbers, manifests that vouch for bytes."""

from __future__ import annotations

import pytest

from phiv_data import (
    DataError,
    Manifest,
    ManifestError,
    Record,
    ShardWriter,
    Validation,
    load_manifest,
    read_records,
    save_manifest,
    verify_dataset,
    write_records,
)
from phiv_data.shards import describe_shard, infer_split, sha256_file


def make_record(index: int, images: int = 2) -> Record:
    return Record(id=f"train-{index:010d}", source="test", conversations=[
        {"images": [f"train/c/v{index}.{k}.jpg" for k in range(images)], "user": "q",
         "assistant": "a"}])


def test_write_then_read_round_trip(tmp_path):
    records = [make_record(i) for i in range(5)]
    shard = write_records(tmp_path / "x_train.jsonl", records, split="train")
    assert shard.records == 5 and shard.images == 10 and shard.file == "x_train.jsonl"
    assert shard.sha256 == sha256_file(tmp_path / "x_train.jsonl")
    read = list(read_records(tmp_path / "x_train.jsonl"))
    assert [number for number, _ in read] == [1, 2, 3, 4, 5]
    assert [record for _, record in read] == records
    assert describe_shard(tmp_path / "x_train.jsonl", split="train") == shard


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"old\n")
    with pytest.raises(RuntimeError), ShardWriter(target) as writer:
        writer.write(make_record(0))
        raise RuntimeError("crash")
    assert target.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_invalid_dict_is_never_written(tmp_path):
    with pytest.raises(Exception):
        write_records(tmp_path / "bad.jsonl", [{"id": "x", "conversations": []}])
    assert not (tmp_path / "bad.jsonl").exists()


def test_read_records_names_file_line_and_field(tmp_path):
    path = tmp_path / "data.jsonl"
    good = make_record(0).model_dump_json().encode()
    path.write_bytes(good + b"\n" + b'{"id": "y", "conversations": [{"user": 3, "assistant": "b"}]}\n')
    reader = read_records(path)
    assert next(reader)[0] == 1
    with pytest.raises(DataError, match=r"data.jsonl:2: conversations\[0\]\.user"):
        next(reader)


def test_manifest_verification(tmp_path):
    shard = write_records(tmp_path / "d_train.jsonl", [make_record(0)], split="train")
    save_manifest(tmp_path, Manifest(shards=[shard]))
    with pytest.raises(ManifestError, match="never validated.*phiv-data validate"):
        verify_dataset(tmp_path)
    shard.validation = Validation(passed=True, sha256=shard.sha256)
    save_manifest(tmp_path, Manifest(shards=[shard]))
    directory, manifest = verify_dataset(tmp_path)
    assert directory == tmp_path and manifest.shards[0].split == "train"
    (tmp_path / "d_train.jsonl").write_bytes(b"tampered\n")
    with pytest.raises(ManifestError, match="bytes changed"):
        verify_dataset(tmp_path / "manifest.json")


def test_missing_manifest_is_explained(tmp_path):
    with pytest.raises(ManifestError, match="no manifest"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(("text", "message"), [
    ('{"shards": [{"file": 1}]}', r"manifest.json: shards\[0\]\.file: Expected `str`, got `int`"),
    ('{"shards": [{"file": "a"}]}', r"shards\[0\]: Object missing required field `sha256`"),
    ('{"shards": [], "extra": 1}', "unknown field `extra`"),
    ('{"shards": [', "truncated"), ('{"shards": x}', "JSON is malformed"),
])
def test_damaged_manifest_says_where(tmp_path, text, message):
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(ManifestError, match=message) as caught:
        load_manifest(tmp_path)
    assert "rerun the converter" in caught.value.hint


def test_manifest_round_trips_its_bytes(tmp_path):
    shard = write_records(tmp_path / "d_train.jsonl", [make_record(0)], split="train")
    shard = shard.replace(validation=Validation(passed=True, sha256=shard.sha256))
    save_manifest(tmp_path, Manifest(shards=[shard], producer={"command": "x",
                                                                "src": tmp_path / "in"}))
    first = (tmp_path / "manifest.json").read_bytes()
    loaded = load_manifest(tmp_path)
    assert loaded.shards == [shard]
    assert loaded.producer == {"command": "x", "src": str(tmp_path / "in")}  # paths as text
    save_manifest(tmp_path, loaded)
    assert (tmp_path / "manifest.json").read_bytes() == first


@pytest.mark.parametrize(("name", "split"), [
    ("ucf101_train.jsonl", "train"), ("dev_seen.jsonl", "val"), ("docvqa_test.jsonl", "test"),
    ("records.jsonl", None), ("nlvr2_validation.jsonl", "val"),
])
def test_infer_split(name, split):
    assert infer_split(name) == split
