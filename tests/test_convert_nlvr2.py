"""NLVR2 converter: JSON Lines with varying key order and string labels, image naming,
train buckets, lookup by file name, JPEGs named .png, parquet variants, bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from native_factories import (
    assert_same_output_with_one_or_two_workers,
    encode,
    make_nlvr2_parquet,
    make_nlvr2_tree,
    photo,
    tree_bytes,
    write_json_lines,
)
from typer.testing import CliRunner

from phiv_data.cli import app
from phiv_data.convert.framework import RunOptions
from phiv_data.convert.native_io import RowProblem
from phiv_data.convert.nlvr2 import NLVR2Options, convert, nlvr2_record, parse_label
from phiv_data.convert.prompts import NLVR2_PROMPT
from phiv_data.errors import DataError, UsageError
from phiv_data.shards import load_manifest, read_records

ONE = RunOptions(workers=1, progress=False)


def records(path: Path) -> list:
    return [record for _, record in read_records(path)]


def test_docstring_example_is_what_the_row_function_returns():
    row = {"validation": {}, "sentence": "One image shows exactly two brown acorns.",
           "left_url": "u", "writer": "103", "label": "False", "right_url": "v",
           "synset": "acorn", "query": "acorn 10", "identifier": "dev-850-0-0"}
    record = nlvr2_record(row, record_id="dev-0000000000",
                          images=["dev/dev-850-0-img0.png", "dev/dev-850-0-img1.png"])
    assert record.to_json_dict() == {
        "id": "dev-0000000000", "source": "nlvr2",
        "conversations": [{"images": ["dev/dev-850-0-img0.png", "dev/dev-850-0-img1.png"],
                           "user": "The first image is the left image and the second is the "
                                   "right image. Is this statement true? One image shows "
                                   "exactly two brown acorns.\nAnswer True or False.",
                           "assistant": "False"}],
        "meta": {"identifier": "dev-850-0-0"}}


def test_official_layout(tmp_path):
    tree = make_nlvr2_tree(tmp_path / "src", misplaced=1)
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    out = tmp_path / "out"
    assert report.records == {"train": 6, "dev": 4, "test1": 4} and not report.skipped
    for split in ("train", "dev", "test1"):
        written = records(out / f"nlvr2_{split}.jsonl")
        # keys were shuffled per line in the source; labels are the strings "True"/"False"
        for record, row in zip(written, tree.rows[split]):
            turn = record.conversations[0]
            assert turn.assistant == row["label"]
            assert turn.user == NLVR2_PROMPT.format(sentence=row["sentence"])
            assert record.meta == {"identifier": row["identifier"]}
            pair = row["identifier"].rsplit("-", 1)[0]
            left, right = turn.images
            assert left.startswith(f"{split}/{pair}-img0.") and right == f"{split}/{pair}-img1.png"
            # left then right, bytes unchanged
            assert (out / "images" / left).read_bytes() == tree.images[f"{pair}-img0.png"]
            assert (out / "images" / right).read_bytes() == tree.images[f"{pair}-img1.png"]
    # a pair shared by two sentences is written once: 3 train pairs -> 6 files, flat per split
    assert len(list((out / "images" / "train").iterdir())) == 6


def test_png_files_holding_jpegs_get_a_jpg_name(tmp_path):
    tree = make_nlvr2_tree(tmp_path / "src", splits={"dev": 2}, jpeg_as_png=1)
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    first = records(tmp_path / "out" / "nlvr2_dev.jsonl")[0]
    assert first.conversations[0].images == ["dev/dev-100-0-img0.jpg", "dev/dev-100-0-img1.png"]
    written = tmp_path / "out" / "images" / "dev" / "dev-100-0-img0.jpg"
    assert written.read_bytes() == tree.images["dev-100-0-img0.png"]  # copied, not re-encoded
    assert written.read_bytes()[:3] == b"\xff\xd8\xff"
    assert not (tmp_path / "out" / "images" / "dev" / "dev-100-0-img0.png").exists()
    assert any("holds a JPEG image: written as dev/dev-100-0-img0.jpg" in note.note
               for note in report.changed)


def test_images_in_the_wrong_bucket_are_found_by_name(tmp_path):
    make_nlvr2_tree(tmp_path / "src", splits={"train": 3}, misplaced=2)
    assert (tmp_path / "src" / "images" / "train" / "50").is_dir()
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    assert report.records == {"train": 6} and not report.skipped


def test_missing_image_unlabeled_row_bad_label_and_broken_line(tmp_path):
    make_nlvr2_tree(tmp_path / "src", splits={"dev": 3}, jpeg_as_png=0)
    (tmp_path / "src" / "images" / "dev" / "dev-101-1-img1.png").unlink()
    path = tmp_path / "src" / "dev.json"
    lines = path.read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    del rows[4]["label"]  # no label: an evaluation row
    rows[5]["label"] = "maybe"
    text = "\n".join(json.dumps(row) for row in rows) + '\n{"identifier": "dev-1\n'
    path.write_text(text)
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    skipped = [(entry.where, entry.reason) for entry in report.skipped]
    assert skipped == [("dev.json:3", "missing-image"), ("dev.json:4", "missing-image"),
                       ("dev.json:6", "invalid-row"), ("dev.json:7", "unparseable-row")]
    written = records(tmp_path / "out" / "nlvr2_dev.jsonl")
    assert [record.meta["identifier"] for record in written] == [
        "dev-100-0-0", "dev-100-0-1", "dev-102-0-0"]
    assert written[2].conversations[0].assistant is None
    assert load_manifest(tmp_path / "out").shard("nlvr2_dev.jsonl").unlabeled == 1
    assert any("1 of 7 sentences have no label" in note for note in report.notes)


def test_subset_files_are_not_splits(tmp_path):
    make_nlvr2_tree(tmp_path / "src", splits={"dev": 1})
    write_json_lines(tmp_path / "src" / "balanced" / "balanced_dev.json", [{"identifier": "x"}])
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    assert list(report.records) == ["dev"]


@pytest.mark.parametrize("layout", ["columns", "list"])
def test_parquet_variants(tmp_path, layout):
    tree = make_nlvr2_parquet(tmp_path / "src", layout=layout)
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    assert report.records == {"train": 4, "dev": 4} and not report.skipped
    dev = records(tmp_path / "out" / "nlvr2_dev.jsonl")
    assert dev[0].conversations[0].images == ["dev/validation-100-0-img0.png",
                                              "dev/validation-100-0-img1.png"]
    assert [record.conversations[0].assistant for record in dev] == [
        row["label"] for row in tree.rows["validation"]]
    written = tmp_path / "out" / "images" / "dev" / "validation-100-0-img1.png"
    assert written.read_bytes() == tree.images["validation-100-0-img1.png"]


def test_parquet_saved_by_datasets_with_a_list_of_images(tmp_path):
    import datasets
    from native_factories import write_parquet_with_datasets

    left, right = encode(photo(seed=1), "PNG"), encode(photo(seed=2), "JPEG")
    write_parquet_with_datasets(
        tmp_path / "src" / "test1-00000-of-00001.parquet",
        [{"identifier": "test1-7-1-0", "sentence": "Two dogs.", "label": 0,
          "images": [{"bytes": left, "path": None}, {"bytes": right, "path": None}]}],
        {"identifier": datasets.Value("string"), "sentence": datasets.Value("string"),
         "label": datasets.ClassLabel(names=["True", "False"]),
         "images": datasets.Sequence(datasets.Image())})
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    (record,) = records(tmp_path / "out" / "nlvr2_test1.jsonl")
    # a ClassLabel's integer means its name: 0 is "True" in this copy's feature metadata
    assert record.conversations[0].assistant == "True"
    # the right image is a JPEG: named by its content
    assert record.conversations[0].images == ["test1/test1-7-1-img0.png",
                                              "test1/test1-7-1-img1.jpg"]
    assert (tmp_path / "out" / "images" / "test1" / "test1-7-1-img1.jpg").read_bytes() == right
    assert not report.skipped


def test_parquet_without_image_columns_is_refused(tmp_path):
    from native_factories import write_parquet

    write_parquet(tmp_path / "src" / "train.parquet",
                  [{"identifier": "train-1-0-0", "sentence": "s", "label": "True"}])
    with pytest.raises(DataError, match="no image columns"):
        convert(tmp_path / "src", tmp_path / "out", run=ONE)


def test_parquet_list_with_one_image_is_a_row_problem(tmp_path):
    from native_factories import image_cell, write_parquet

    data = encode(photo(), "PNG")
    write_parquet(tmp_path / "src" / "train.parquet", [
        {"identifier": "train-1-0-0", "sentence": "s", "label": "True",
         "images": [image_cell(data, None)]}])
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    assert [(entry.where, entry.reason) for entry in report.skipped] == [
        ("train.parquet: row 1", "missing-image")]


@pytest.mark.parametrize("value, expected", [("True", True), ("False", False), (True, True),
                                             (0, False), ("true", True), (None, None)])
def test_labels(value, expected):
    assert parse_label(value) is expected


def test_special_token_sentence():
    row = {"identifier": "dev-1-0-0", "sentence": "a </s> b", "label": "True"}
    with pytest.raises(RowProblem, match="special-token string '</s>'") as caught:
        nlvr2_record(row, record_id="x", images=["a.png", "b.png"])
    assert caught.value.reason == "special-token-text"


def test_same_output_with_one_or_two_workers_and_cli(tmp_path):
    make_nlvr2_tree(tmp_path / "src", splits={"train": 4, "dev": 3}, misplaced=1)
    assert_same_output_with_one_or_two_workers(convert, tmp_path / "src", tmp_path)

    result = CliRunner().invoke(app, [
        "convert", "nlvr2", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "cli"),
        "--workers", "2", "--prompt-template", "{sentence} True or False?"])
    assert result.exit_code == 0, result.output
    convert(tmp_path / "src", tmp_path / "api", NLVR2Options(prompt="{sentence} True or False?"),
            run=ONE)
    assert tree_bytes(tmp_path / "cli") == tree_bytes(tmp_path / "api")
    first = records(tmp_path / "cli" / "nlvr2_train.jsonl")[0]
    assert first.conversations[0].user == "The left image has 0 dogs. True or False?"


@pytest.mark.parametrize("layout", ["official", "list"])
def test_output_validates_with_decoded_images(tmp_path, layout):
    from phiv_data.validate import ValidationOptions, validate_paths

    if layout == "official":
        make_nlvr2_tree(tmp_path / "src", misplaced=1)
    else:
        make_nlvr2_parquet(tmp_path / "src", layout=layout)
    convert(tmp_path / "src", tmp_path / "out", run=ONE)
    report = validate_paths([tmp_path / "out"], ValidationOptions(check_images="decode",
                                                                  workers=1))
    assert report.ok and not report.issues, [str(issue) for issue in report.issues]


def test_resume_after_a_strict_failure_gives_the_same_output(tmp_path):
    make_nlvr2_tree(tmp_path / "src", splits={"train": 3, "dev": 2})
    (tmp_path / "src" / "images" / "dev" / "dev-100-0-img1.png").unlink()
    with pytest.raises(DataError, match=r"dev.json:1: missing-image"):
        convert(tmp_path / "src", tmp_path / "out",
                run=RunOptions(workers=1, strict=True, progress=False))
    assert not (tmp_path / "out" / "manifest.json").exists()
    resumed = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    # train's 6 are resumed; the skipped row is tried again (the input may have been fixed)
    assert load_manifest(tmp_path / "out").producer["resumed_items"] == 6
    fresh = convert(tmp_path / "src", tmp_path / "fresh", run=ONE)
    assert tree_bytes(tmp_path / "out") == tree_bytes(tmp_path / "fresh")
    assert resumed.to_dict() == fresh.to_dict()
    again = convert(tmp_path / "src", tmp_path / "out", run=ONE)  # finished: nothing to do
    assert again.to_dict() == fresh.to_dict()


def test_resume_after_a_missing_image_appeared_is_refused_not_stale(tmp_path):
    make_nlvr2_tree(tmp_path / "src", splits={"dev": 2})
    image = tmp_path / "src" / "images" / "dev" / "dev-101-1-img0.png"
    data = image.read_bytes()
    image.unlink()
    with pytest.raises(DataError, match=r"dev.json:3: missing-image"):
        convert(tmp_path / "src", tmp_path / "out",
                run=RunOptions(workers=1, strict=True, progress=False))
    image.write_bytes(data)  # the user fixed the input: the journaled skip no longer holds
    with pytest.raises(UsageError, match="the input files differ"):
        convert(tmp_path / "src", tmp_path / "out", run=ONE)


def test_every_split_file_in_order_including_test2(tmp_path):
    make_nlvr2_tree(tmp_path / "src", splits={"test2": 1, "dev": 1, "test1": 1}, jpeg_as_png=0)
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    assert list(report.records) == ["dev", "test1", "test2"] and not report.skipped
    (first, _) = records(tmp_path / "out" / "nlvr2_test2.jsonl")
    assert first.conversations[0].images == ["test2/test2-100-0-img0.png",
                                             "test2/test2-100-0-img1.png"]
