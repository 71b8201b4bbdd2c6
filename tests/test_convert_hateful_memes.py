"""Hateful Memes converter: every file name, zero-padded ids, labels decided by rows, text
kept character for character, shared dev records, shared images, bad rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import orjson
import pytest
from native_factories import TRICKY_TEXT, make_hateful_memes_tree, tree_bytes
from typer.testing import CliRunner

from phiv_data.cli import app
from phiv_data.convert.framework import RunOptions
from phiv_data.convert.hateful_memes import (
    HatefulMemesOptions,
    convert,
    hateful_memes_record,
    meme_id,
)
from phiv_data.convert.native_io import RowProblem
from phiv_data.convert.prompts import HATEFUL_MEMES_PROMPT
from phiv_data.shards import load_manifest, read_records

ONE = RunOptions(workers=1, progress=False)


def records(path: Path) -> list:
    return [record for _, record in read_records(path)]


def test_docstring_example_is_what_the_row_function_returns():
    row = {"id": "08291", "img": "img/08291.png", "label": 1,
           "text": "white people is this a shooting range"}
    record = hateful_memes_record(row, record_id="dev_seen-0000000000", image="img/08291.png")
    assert record.to_json_dict() == {
        "id": "dev_seen-0000000000", "source": "hateful_memes",
        "conversations": [{"images": ["img/08291.png"],
                           "user": "The text on this meme reads: white people is this a "
                                   "shooting range\nIs this meme hateful? Answer yes or no.",
                           "assistant": "yes"}],
        "meta": {"id": "08291"}}


def test_every_file_converts_and_labels_are_decided_by_rows(tmp_path):
    tree = make_hateful_memes_tree(tmp_path / "src")
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    out = tmp_path / "out"
    assert report.records == {"train": 4, "dev_seen": 3, "dev_unseen": 3, "test_seen": 2,
                              "test_unseen": 2} and not report.skipped
    for split, rows in tree.rows.items():
        for record, row in zip(records(out / f"hateful_memes_{split}.jsonl"), rows):
            assert record.meta == {"id": row["id"]}
            assert isinstance(record.meta["id"], str) and len(record.meta["id"]) == 5
            expected = {1: "yes", 0: "no"}.get(row.get("label"))
            assert record.conversations[0].assistant == expected
            assert record.conversations[0].images == [row["img"]]
    shards = {shard.split: shard.unlabeled for shard in load_manifest(out).shards}
    # test_seen has no labels; test_unseen (a final release) has them and stays labelled
    assert shards == {"train": 0, "dev_seen": 0, "dev_unseen": 0, "test_seen": 2,
                      "test_unseen": 0}
    # each meme image written once, shared by every split that uses it
    assert len(list((out / "images" / "img").iterdir())) == len(tree.images) == 13


def test_text_is_kept_character_for_character(tmp_path):
    make_hateful_memes_tree(tmp_path / "src")
    convert(tmp_path / "src", tmp_path / "out", run=ONE)
    raw = (tmp_path / "out" / "hateful_memes_train.jsonl").read_bytes().split(b"\n")[0]
    user = orjson.loads(raw)["conversations"][0]["user"]
    assert user == HATEFUL_MEMES_PROMPT.format(text=TRICKY_TEXT)
    assert TRICKY_TEXT in user and user.count("\u0000") == 1
    assert b"\\u0000" in raw and b"\\u001b" in raw  # control characters JSON-escaped


def test_shared_dev_records_are_reported(tmp_path):
    tree = make_hateful_memes_tree(tmp_path / "src", shared_dev=2)
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    shared = [row["id"] for row in tree.rows["dev_seen"][:2]]
    (note,) = [note for note in report.notes if "dev_seen and dev_unseen share" in note]
    assert note == ("dev_seen and dev_unseen share 2 records by id (2 identical, 0 differing): "
                    + ", ".join(sorted(shared)))
    assert note in load_manifest(tmp_path / "out").report["notes"]


def test_shared_dev_records_that_differ_are_named(tmp_path):
    tree = make_hateful_memes_tree(tmp_path / "src", files={"dev_seen": 3, "dev_unseen": 1},
                                   shared_dev=2)
    path = tmp_path / "src" / "dev_unseen.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["label"] = 1 - rows[1]["label"]  # the same meme, relabelled in the other file
    rows[0]["id"] = int(rows[0]["id"])  # an integer id is still the same meme
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    first, second = (row["id"] for row in tree.rows["dev_seen"][:2])
    (note,) = [note for note in report.notes if "share" in note]
    assert note.endswith(f"(1 identical, 1 differing): {', '.join(sorted([first, second]))}; "
                         f"differing: {second}")
    # both files are still converted whole: the overlap is reported, never dropped
    assert report.records == {"dev_seen": 3, "dev_unseen": 3}


def test_older_file_names_and_integer_ids(tmp_path):
    make_hateful_memes_tree(tmp_path / "src", files={"train": 2, "dev": 2, "test": 1})
    path = tmp_path / "src" / "dev.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["id"] = int(rows[0]["id"])  # an integer id loses its leading zeros
    # CRLF line ends and a byte order mark, as a Windows editor saves it
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(row) + "\r\n" for row in rows).encode())
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    assert report.records == {"train": 2, "dev": 2, "test": 1}
    dev = records(tmp_path / "out" / "hateful_memes_dev.jsonl")
    assert dev[0].meta["id"] == Path(rows[0]["img"]).stem and dev[0].meta["id"].startswith("0")
    assert not any("share" in note for note in report.notes)


def test_meme_id_rules():
    assert meme_id({"id": "01235"}) == "01235"
    assert meme_id({"id": 1235, "img": "img/01235.png"}) == "01235"
    assert meme_id({"id": 1235, "img": "img/other.png"}) == "01235"
    with pytest.raises(RowProblem, match="zero-padded string"):
        meme_id({"id": None})


def test_bad_rows_are_reported_with_file_and_line(tmp_path):
    make_hateful_memes_tree(tmp_path / "src", files={"train": 3})
    path = tmp_path / "src" / "train.jsonl"
    # split on "\n" only: the first line's text holds U+2028 and U+0085, written unescaped
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    row = json.loads(lines[1])
    row["text"] = "hi <|user|> there"
    lines[1] = json.dumps(row)
    lines.append('{"id": "99999", "img": "img/99999.png", "label": 0, "text": "gone"}')
    lines.append('{"id": "99998", "img": "img/00001.png", "label": 7, "text": "x"}')
    lines.append('{"id": "99997", "img": "img/00001.png", "text": "bad \\ud800 text"}')
    lines.append('{"id": "99996", "img": "img/00001.png", "text": "raw\ttab"}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = convert(tmp_path / "src", tmp_path / "out", run=ONE)
    assert [(entry.where, entry.reason) for entry in report.skipped] == [
        ("train.jsonl:2", "special-token-text"), ("train.jsonl:4", "missing-image"),
        ("train.jsonl:5", "invalid-row"), ("train.jsonl:6", "unparseable-row")]
    assert "lone surrogate" in report.skipped[-1].detail
    written = records(tmp_path / "out" / "hateful_memes_train.jsonl")
    # a raw (unescaped) tab inside the JSON string is accepted and kept
    assert written[-1].conversations[0].user.startswith("The text on this meme reads: raw\ttab")
    assert written[-1].conversations[0].assistant is None


def test_empty_text_and_custom_prompt(tmp_path):
    make_hateful_memes_tree(tmp_path / "src", files={"train": 1})
    path = tmp_path / "src" / "train.jsonl"
    row = json.loads(path.read_text())
    row["text"] = ""
    path.write_text(json.dumps(row) + "\n")
    convert(tmp_path / "src", tmp_path / "out",
            HatefulMemesOptions(prompt="Meme says: «{text}». Hateful?"), run=ONE)
    (record,) = records(tmp_path / "out" / "hateful_memes_train.jsonl")
    assert record.conversations[0].user == "Meme says: «». Hateful?"


def test_output_validates_with_decoded_images(tmp_path):
    make_hateful_memes_tree(tmp_path / "src")
    convert(tmp_path / "src", tmp_path / "out", run=ONE)
    # exactly the command the README gives
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "out"), "--check-images",
                                      "decode", "--workers", "1", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # kept on purpose: control characters in the meme text (a warning), the test_seen file
    # without labels, and the meme dev_seen and dev_unseen share
    assert {issue["code"] for issue in report["issues"]} == {"W-TEXT-CONTROL", "I-UNLABELED",
                                                             "W-LEAK-SHARED"}
    assert load_manifest(tmp_path / "out").shards[0].validation is not None  # recorded


@pytest.mark.parametrize("name", ["DOCVQA_PROMPT", "NLVR2_PROMPT", "HATEFUL_MEMES_PROMPT"])
def test_prompts_are_documented_in_the_readme(name):
    from phiv_data.convert import prompts

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert f"`{getattr(prompts, name)!r}`" in readme


def test_cli_with_link_and_two_workers_equals_one_worker_copy(tmp_path):
    make_hateful_memes_tree(tmp_path / "src")
    result = CliRunner().invoke(app, [
        "convert", "hateful-memes", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "cli"),
        "--link", "--workers", "2", "--check-images", "verify"])
    assert result.exit_code == 0, result.output
    assert "dev_seen and dev_unseen share 1 record by id" in result.output
    convert(tmp_path / "src", tmp_path / "api", HatefulMemesOptions(check="verify"), run=ONE)
    assert tree_bytes(tmp_path / "cli") == tree_bytes(tmp_path / "api")
    image = tmp_path / "cli" / "images" / "img" / "00001.png"
    assert os.path.samefile(image, tmp_path / "src" / "img" / "00001.png")  # hard-linked
    assert not os.path.samefile(tmp_path / "api" / "images" / "img" / "00001.png",
                                tmp_path / "src" / "img" / "00001.png")  # copied


def test_fan_out_and_join_equal_a_single_run(tmp_path):
    from phiv_data.convert.join import join_parts

    make_hateful_memes_tree(tmp_path / "src")
    single = convert(tmp_path / "src", tmp_path / "single", run=ONE)
    parts = [tmp_path / f"part{index}" for index in range(3)]
    for index, part in enumerate(parts):
        convert(tmp_path / "src", part, run=RunOptions(workers=1, progress=False, num_shards=3,
                                                       shard_index=index))
    joined = join_parts(parts, tmp_path / "joined", mode="copy")
    assert tree_bytes(tmp_path / "joined") == tree_bytes(tmp_path / "single")
    assert joined.to_dict() == single.to_dict()
