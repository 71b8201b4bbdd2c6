"""DocVQA converter: official files (wrapper or bare list, with or without question types),
parquet copies, page lookup, shared pages, the unlabeled test split, bad rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from native_factories import (
    assert_same_output_with_one_or_two_workers,
    make_docvqa_parquet,
    make_docvqa_tree,
)
from typer.testing import CliRunner

from phiv_data.cli import app
from phiv_data.convert.docvqa import DocVQAOptions, convert, docvqa_record, find_sources
from phiv_data.convert.framework import RunOptions
from phiv_data.convert.native_io import RowProblem
from phiv_data.errors import DataError, UsageError
from phiv_data.shards import load_manifest, read_records

ONE = RunOptions(workers=1, progress=False)


def records(path: Path) -> list:
    return [record for _, record in read_records(path)]


def test_docstring_example_is_what_the_row_function_returns():
    item = {"questionId": 49153, "question": "What is the ‘actual’ value per 1000, during the "
            "year 1975?", "question_types": ["figure/diagram"],
            "image": "documents/pybv0228_81.png", "docId": 14465,
            "ucsf_document_id": "pybv0228", "ucsf_document_page_no": "81",
            "answers": ["0.28"], "data_split": "val"}
    record = docvqa_record(item, record_id="val-0000000002", image="val/pybv0228_81.png")
    assert record.to_json_dict() == {
        "id": "val-0000000002", "source": "docvqa",
        "conversations": [{"images": ["val/pybv0228_81.png"], "user": item["question"],
                           "assistant": "0.28"}],
        "meta": {"questionId": 49153, "answers": ["0.28"], "question_types": ["figure/diagram"],
                 "docId": 14465, "ucsf_document_id": "pybv0228",
                 "ucsf_document_page_no": "81"}}


def test_official_release_converts_every_split(tmp_path):
    tree = make_docvqa_tree(tmp_path / "src")
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    out = tmp_path / "out"
    assert report.records == {"train": 5, "val": 4, "test": 3} and not report.skipped
    assert sorted(path.name for path in out.iterdir()) == [
        "docvqa_test.jsonl", "docvqa_train.jsonl", "docvqa_val.jsonl", "images",
        "manifest.json"]

    train = records(out / "docvqa_train.jsonl")
    for record, item in zip(train, tree.questions["train"]):
        turn = record.conversations[0]
        assert turn.user == item["question"] and turn.assistant == item["answers"][0]
        assert record.meta["answers"] == item["answers"]  # every answer, for ANLS
        assert record.meta["questionId"] == item["questionId"]
        assert record.meta["question_types"] == item["question_types"]
        assert turn.images == ["train/" + item["image"].split("/")[-1]]
    assert [record.id for record in train] == [f"train-{i:010d}" for i in range(5)]
    # val_v1.0.json is a bare list without question_types
    val = records(out / "docvqa_val.jsonl")
    assert len(val) == 4 and all("question_types" not in record.meta for record in val)

    # 5 train questions on 3 pages: each page written once, bytes unchanged
    pages = sorted((out / "images" / "train").iterdir())
    assert len(pages) == 3
    for page in pages:
        assert page.read_bytes() == tree.pages[page.name]


def test_test_split_without_answers_becomes_unlabeled_evaluation_data(tmp_path):
    make_docvqa_tree(tmp_path / "src")
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    test = records(tmp_path / "out" / "docvqa_test.jsonl")
    assert [record.conversations[0].assistant for record in test] == [None] * 3
    assert all("answers" not in record.meta for record in test)
    shards = {shard.split: shard for shard in load_manifest(tmp_path / "out").shards}
    assert (shards["test"].unlabeled, shards["train"].unlabeled) == (3, 0)
    assert any("test: 3 of 3 questions have no answers" in note for note in report.notes)


def test_pages_in_another_folder_are_found_by_file_name(tmp_path):
    tree = make_docvqa_tree(tmp_path / "src", image_folder="spdocvqa_images")
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    assert not report.skipped and sum(report.records.values()) == 12
    for page in (tmp_path / "out" / "images" / "val").iterdir():
        assert page.read_bytes() == tree.pages[page.name]


def test_with_question_types_file_supersedes_the_plain_one(tmp_path):
    make_docvqa_tree(tmp_path / "src", splits={"train": 4})
    withqt = tmp_path / "src" / "train" / "train_v1.0_withQT.json"
    plain = json.loads(withqt.read_text())
    for item in plain["data"]:
        del item["question_types"]
    (withqt.parent / "train_v1.0.json").write_text(json.dumps(plain))
    (source,) = find_sources(tmp_path / "src")
    assert source.files == [withqt]
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    assert any("train/train_v1.0.json not read" in note for note in report.notes)
    assert all("question_types" in record.meta
               for record in records(tmp_path / "out" / "docvqa_train.jsonl"))


def test_annotation_file_with_a_byte_order_mark(tmp_path):
    make_docvqa_tree(tmp_path / "src", splits={"val": 2})
    path = tmp_path / "src" / "val" / "val_v1.0.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    assert report.records == {"val": 2} and not report.skipped


def test_parquet_copy_with_string_ids_and_several_files(tmp_path):
    tree = make_docvqa_parquet(tmp_path / "src", files_per_split=2)
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    out = tmp_path / "out"
    assert report.records == {"train": 4, "val": 3, "test": 2} and not report.skipped
    val = records(out / "docvqa_val.jsonl")
    assert [record.meta["questionId"] for record in val] == [2000, 2001, 2002]  # ints again
    assert val[0].conversations[0].images == ["val/d010xva_1.png"]
    assert (out / "images" / "val" / "d010xva_1.png").read_bytes() == tree.pages["d010xva_1.png"]
    assert records(out / "docvqa_test.jsonl")[0].conversations[0].assistant is None


def test_parquet_saved_by_datasets(tmp_path):
    import datasets
    from native_factories import document_page, docvqa_items, encode, write_parquet_with_datasets

    text, strings = datasets.Value("string"), datasets.Sequence(datasets.Value("string"))
    rows, pages = [], {}
    for item in docvqa_items("validation", 3, pages=2):
        name = item["image"].split("/")[-1]
        pages.setdefault(name, encode(document_page(seed=len(pages)), "PNG"))
        rows.append({**item, "questionId": str(item["questionId"]),
                     "image": {"bytes": pages[name], "path": None}})
    write_parquet_with_datasets(
        tmp_path / "src" / "data" / "validation-00000-of-00001.parquet", rows,
        {"questionId": text, "question": text, "question_types": strings,
         "image": datasets.Image(), "docId": datasets.Value("int64"), "ucsf_document_id": text,
         "ucsf_document_page_no": text, "answers": strings, "data_split": text})
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    assert report.records == {"val": 3} and not report.skipped
    first = records(tmp_path / "out" / "docvqa_val.jsonl")[0]
    assert first.meta["questionId"] == 1000 and first.meta["answers"] == ["0.00"]
    assert (tmp_path / "out" / "images" / first.conversations[0].images[0]).read_bytes() == (
        pages[first.conversations[0].images[0].split("/")[-1]])


def test_parquet_and_official_files_together_are_refused(tmp_path):
    make_docvqa_tree(tmp_path / "src", splits={"train": 2})
    make_docvqa_parquet(tmp_path / "src" / "hf", splits={"train": 2})
    with pytest.raises(UsageError, match="both DocVQA annotation files and parquet"):
        convert(tmp_path / "src", tmp_path / "out", run=ONE)


@pytest.mark.parametrize("check", ["decode", "verify"])
def test_missing_and_unreadable_pages_are_reported_with_file_and_item(tmp_path, check):
    tree = make_docvqa_tree(tmp_path / "src", splits={"train": 6}, pages_per_split=3,
                            page_size=(40, 50))
    documents = tmp_path / "src" / "train" / "documents"
    (documents / "d001xtr_2.png").unlink()  # questions 1 and 4
    corrupt = bytearray(tree.pages["d002xtr_3.png"])  # questions 2 and 5
    corrupt[len(corrupt) // 2] ^= 0xFF  # one flipped bit inside the compressed pixels
    (documents / "d002xtr_3.png").write_bytes(bytes(corrupt))
    report = convert(tmp_path / "src", tmp_path / "out", DocVQAOptions(check=check), run=ONE)
    skipped = {(entry.where, entry.reason) for entry in report.skipped}
    where = "train/train_v1.0_withQT.json: data"
    assert skipped == {(f"{where}[1]", "missing-image"), (f"{where}[4]", "missing-image"),
                       (f"{where}[2]", "unreadable-image"), (f"{where}[5]", "unreadable-image")}
    assert report.records == {"train": 2}
    assert load_manifest(tmp_path / "out").report["skipped_by_reason"] == {
        "missing-image": 2, "unreadable-image": 2}

    with pytest.raises(DataError, match=r"train_v1.0_withQT.json: data\[1\]: missing-image"):
        convert(tmp_path / "src", tmp_path / "strict", DocVQAOptions(check=check),
                run=RunOptions(workers=1, strict=True, progress=False))


def test_special_token_text_is_reported_not_written(tmp_path):
    make_docvqa_tree(tmp_path / "src", splits={"val": 3})
    path = tmp_path / "src" / "val" / "val_v1.0.json"
    items = json.loads(path.read_text())
    items[0]["question"] = "What does <s> mean here?"
    items[1]["answers"] = ["<|end|>"]
    items[2]["answers"] = ["fine", "<|end|>"]  # only meta sees the other answers: kept
    path.write_text(json.dumps(items))
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    assert [(entry.where, entry.reason) for entry in report.skipped] == [
        ("val/val_v1.0.json: [0]", "special-token-text"),
        ("val/val_v1.0.json: [1]", "special-token-text")]
    assert "'<s>'" in report.skipped[0].detail
    (kept,) = records(tmp_path / "out" / "docvqa_val.jsonl")
    assert kept.id == "val-0000000002" and kept.meta["answers"] == ["fine", "<|end|>"]


@pytest.mark.parametrize("item, message", [
    ({"answers": ["x"]}, "question is missing"),
    ({"question": "  ", "answers": ["x"]}, "question is empty"),
    ({"question": "q", "answers": "x"}, "answers: expected a list"),
    ({"question": "q", "answers": ["", "x"]}, r"answers\[0\] is empty"),
])
def test_bad_items_raise_row_problems(item, message):
    with pytest.raises(RowProblem, match=message):
        docvqa_record(item, record_id="x", image="a.png")


def test_prompt_template_and_link(tmp_path):
    make_docvqa_tree(tmp_path / "src", splits={"train": 2})
    options = DocVQAOptions(prompt="Answer from the page: {question}", link=True)
    convert(tmp_path / "src", tmp_path / "out", options, run=ONE)
    (record, _) = records(tmp_path / "out" / "docvqa_train.jsonl")
    assert record.conversations[0].user.startswith("Answer from the page: What is")
    written = tmp_path / "out" / "images" / record.conversations[0].images[0]
    source = tmp_path / "src" / "train" / "documents" / written.name
    assert os.path.samefile(written, source)  # hard-linked
    with pytest.raises(UsageError, match=r"exactly the field\(s\) \{question\}"):
        convert(tmp_path / "src", tmp_path / "o2", DocVQAOptions(prompt="{text}"), run=ONE)
    with pytest.raises(UsageError, match="special-token string '<|image_1|>'"):
        convert(tmp_path / "src", tmp_path / "o3",
                DocVQAOptions(prompt="<|image_1|>\n{question}"), run=ONE)


def test_cli(tmp_path):
    make_docvqa_tree(tmp_path / "src", splits={"train": 2, "test": 1})
    runner = CliRunner()
    result = runner.invoke(app, ["convert", "docvqa", "--src", str(tmp_path / "src"),
                                 "--out", str(tmp_path / "out"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "train: 2 records, 2 images" in result.output
    assert load_manifest(tmp_path / "out").producer["command"].startswith("phiv-data")

    (tmp_path / "src" / "train" / "documents" / "d000xtr_1.png").unlink()
    result = runner.invoke(app, ["convert", "docvqa", "--src", str(tmp_path / "src"),
                                 "--out", str(tmp_path / "strict"), "--strict", "--workers", "1"])
    assert result.exit_code == 1
    assert "train_v1.0_withQT.json: data[0]: missing-image" in result.output
    result = runner.invoke(app, ["convert", "docvqa", "--src", str(tmp_path / "nothing"),
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not a directory" in result.output


@pytest.mark.parametrize("make", [make_docvqa_tree, make_docvqa_parquet])
def test_output_validates_with_decoded_images(tmp_path, make):
    from phiv_data.validate import ValidationOptions, validate_paths

    make(tmp_path / "src")
    convert(tmp_path / "src", tmp_path / "out", run=ONE)
    report = validate_paths([tmp_path / "out"], ValidationOptions(check_images="decode",
                                                                  workers=1))
    assert report.ok, [str(issue) for issue in report.issues]
    assert {issue.code for issue in report.issues} == {"I-UNLABELED"}  # the test split


def test_same_output_with_one_or_two_workers(tmp_path):
    make_docvqa_tree(tmp_path / "src", splits={"train": 6, "test": 2}, pages_per_split=2)
    assert_same_output_with_one_or_two_workers(convert, tmp_path / "src", tmp_path)


def test_resume_refuses_rows_changed_since_the_interrupted_run(tmp_path):
    make_docvqa_tree(tmp_path / "src", splits={"train": 4})
    (tmp_path / "src" / "train" / "documents" / "d001xtr_2.png").unlink()  # question 1
    with pytest.raises(DataError, match=r"data\[1\]: missing-image"):
        convert(tmp_path / "src", tmp_path / "out",
                run=RunOptions(workers=1, strict=True, progress=False))
    # question 0 is journaled; editing it must not leave its old record in the output
    path = tmp_path / "src" / "train" / "train_v1.0_withQT.json"
    document = json.loads(path.read_text())
    document["data"][0]["answers"] = ["a corrected answer"]
    path.write_text(json.dumps(document))
    with pytest.raises(UsageError, match="the input files differ"):
        convert(tmp_path / "src", tmp_path / "out", run=ONE)


def test_a_page_already_written_is_not_decoded_again(tmp_path, monkeypatch):
    from phiv_data.convert import native_images
    from phiv_data.convert.native_images import ImageSource, image_media

    tree = make_docvqa_tree(tmp_path / "src", splits={"train": 1})
    page = tmp_path / "src" / "train" / "documents" / "d000xtr_1.png"
    source = ImageSource(page.stem, page.suffix, "train/documents/d000xtr_1.png", path=str(page))
    decoded = []
    monkeypatch.setattr(native_images, "_decode_file",
                        lambda *args: decoded.append(args) or ("PNG", None))
    images = tmp_path / "out" / "images"
    image_media(source, "train", link=False, images_root=images)
    assert len(decoded) == 1  # not in the output yet: checked
    (images / "train").mkdir(parents=True)
    (images / "train" / page.name).write_bytes(tree.pages[page.name])  # as another worker did
    media, _ = image_media(source, "train", link=False, images_root=images)
    assert len(decoded) == 1 and media.path == "train/d000xtr_1.png"  # written, so checked
    (images / "train" / page.name).write_bytes(b"short")  # not that file: checked again
    image_media(source, "train", link=False, images_root=images)
    assert len(decoded) == 2
