"""phiv-data import / export: round trips, foreign layouts, reported rows, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fixtures_interop import make_dataset, make_image, read_back, sample_records
from typer.testing import CliRunner

from phiv_data import load_manifest
from phiv_data.cli import app
from phiv_data.errors import DataError
from phiv_data.interop import ExportOptions, export_files, import_files
from phiv_data.validate import ValidationOptions, validate_paths

FORMATS = ["llava", "sharegpt", "hf"]
DATA_FILE = {"llava": "demo_train.json", "sharegpt": "demo_train.json",
             "hf": "demo_train.parquet"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_phiv_to_format_to_phiv_is_lossless(tmp_path: Path, fmt: str):
    shard = make_dataset(tmp_path / "src")
    [exported] = export_files(fmt, [shard], tmp_path / "exported")
    assert (exported.rows, exported.written, exported.rejected, exported.problems) == (4, 4, 0, 0)
    [imported] = import_files(fmt, [tmp_path / "exported" / DATA_FILE[fmt]], tmp_path / "back")
    assert (imported.rows, imported.written, imported.problems) == (4, 4, 0)
    assert read_back(tmp_path / "back" / "demo_train.jsonl") == read_back(shard)
    manifest = load_manifest(tmp_path / "back")
    [entry] = manifest.shards
    assert (entry.file, entry.records, entry.images, entry.unlabeled) == (
        "demo_train.jsonl", 4, 6, 1)
    # the imported shard validates as it is, its images found through the manifest
    validation = validate_paths([tmp_path / "back" / "demo_train.jsonl"],
                                ValidationOptions(check_images="decode"))
    assert validation.errors == 0, validation.render_text()
    images_root = (tmp_path / "back" / entry.images_root).resolve()
    for record in read_back(shard):
        for image in record.images:
            assert (images_root / image).read_bytes() == (tmp_path / "src/images" / image
                                                          ).read_bytes()


def test_llava_export_layout(tmp_path: Path):
    shard = make_dataset(tmp_path / "src")
    export_files("llava", [shard], tmp_path / "out")
    rows = json.loads((tmp_path / "out/demo_train.json").read_text())
    assert rows[0]["image"] == ["a/one.jpg", "a/two.png", "b/three.jpg"]
    assert rows[0]["conversations"][0] == {"from": "human",
                                           "value": "<image>\n<image>\nWhich is larger?"}
    assert rows[0]["conversations"][2]["value"] == "<image>\nAnd this one?"
    assert rows[2]["image"] == "a/one.jpg" and rows[2]["conversations"][-1]["from"] == "human"
    assert "image" not in rows[1]
    # images are hard-linked under the output folder, at their phiv paths
    assert os.path.samefile(tmp_path / "out/a/one.jpg", tmp_path / "src/images/a/one.jpg")


def test_sharegpt_export_writes_a_llama_factory_dataset_info_merged(tmp_path: Path):
    shard = make_dataset(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "o.json"}}))
    [report] = export_files("sharegpt", [shard], out, options=ExportOptions(images="copy"))
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["other"] == {"file_name": "o.json"}
    assert info["demo_train"]["file_name"] == "demo_train.json"
    assert info["demo_train"]["formatting"] == "sharegpt"
    assert info["demo_train"]["columns"] == {"messages": "messages", "images": "images"}
    rows = json.loads((out / "demo_train.json").read_text())
    assert rows[0]["messages"][0] == {"role": "user", "content": "<image><image>Which is larger?"}
    assert json.loads(rows[0]["meta"]) == sample_records()[0]["meta"]
    assert any("1 unlabeled" in note for note in report.notes)
    copied = out / "a/one.jpg"
    assert copied.is_file() and not os.path.samefile(copied, tmp_path / "src/images/a/one.jpg")


def test_export_images_none_writes_paths_only(tmp_path: Path):
    shard = make_dataset(tmp_path / "src")
    export_files("llava", [shard], tmp_path / "out", options=ExportOptions(images="none"))
    assert not (tmp_path / "out/a").exists()
    [report] = import_files("llava", [tmp_path / "out/demo_train.json"], tmp_path / "back",
                            images_root=tmp_path / "src/images")
    assert report.problems == 0
    assert read_back(tmp_path / "back/demo_train.jsonl") == read_back(shard)


def test_llava_import_of_a_foreign_file_reports_each_bad_row_with_its_line(tmp_path: Path):
    make_image(tmp_path / "coco/1.jpg")
    make_image(tmp_path / "coco/2.jpg")
    rows = [
        {"id": 17, "image": "coco/1.jpg", "model": "x",
         "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                           {"from": "gpt", "value": "A square."}]},
        {"id": "b", "image": ["coco/1.jpg", "coco/2.jpg"],
         "conversations": [{"from": "human", "value": "<image>\nOnly one tag"},
                           {"from": "gpt", "value": "?"}]},
        {"id": "c", "conversations": [{"from": "human", "value": "Text only"},
                                      {"from": "gpt", "value": "Fine"}]},
        {"id": "d", "image": "coco/2.jpg",
         "conversations": [{"from": "human", "value": "Look: <image> here"},
                           {"from": "gpt", "value": "Seen"}]},
        {"id": "e", "image": "../outside.jpg",
         "conversations": [{"from": "human", "value": "<image>\nQ"},
                           {"from": "gpt", "value": "A"}]},
    ]
    source = tmp_path / "llava.json"
    source.write_text("[\n" + ",\n".join(json.dumps(row) for row in rows) + "\n]\n")
    [report] = import_files("llava", [source], tmp_path / "out")
    assert (report.rows, report.written, report.rejected, report.changed) == (5, 3, 2, 1)
    problems = {(issue.line, issue.code, issue.severity) for issue in report.issues}
    assert problems == {(3, "tag-count-mismatch", "error"), (5, "tag-moved", "warning"),
                        (6, "image-outside-root", "error")}
    records = read_back(tmp_path / "out/llava.jsonl")
    assert [record.id for record in records] == ["17", "c", "d"]
    assert records[0].meta == {"extra_fields": {"model": "x"}}
    assert records[2].conversations[0].images == ["coco/2.jpg"]
    rejected = [json.loads(line) for line in
                (tmp_path / "out/llava.import-rejected.ndjson").read_text().splitlines()]
    assert [(entry["line"], entry["code"], entry["row"]["id"]) for entry in rejected] == [
        (3, "tag-count-mismatch", "b"), (6, "image-outside-root", "e")]
    saved = json.loads((tmp_path / "out/llava.import-report.json").read_text())
    assert saved["by_code"] == {"image-outside-root": 1, "tag-count-mismatch": 1, "tag-moved": 1}
    manifest = load_manifest(tmp_path / "out")
    assert manifest.shards[0].images_root == str(tmp_path.resolve().as_posix())
    assert manifest.report["import"][report.input]["rejected"] == 2


def test_strict_import_writes_nothing(tmp_path: Path):
    source = tmp_path / "mllm.json"
    source.write_text(json.dumps([{"messages": [{"role": "user", "content": "<image>Who?"},
                                                {"role": "assistant", "content": "Them."}],
                                   "images": []}]))
    with pytest.raises(DataError, match=r"--strict: 1 problem.*mllm\.json:1: "
                                         r"\[tag-count-mismatch\]"):
        import_files("sharegpt", [source], tmp_path / "out", strict=True)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_sharegpt_import_of_llama_factory_layout(tmp_path: Path):
    make_image(tmp_path / "data/mllm_demo_data/1.jpg")
    rows = [
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "<image>Who are they?"},
                      {"role": "assistant", "content": "Players."},
                      {"role": "user", "content": "What are they doing?"},
                      {"role": "assistant", "content": "Celebrating."}],
         "images": ["mllm_demo_data/1.jpg"]},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
         "system": "Classic ShareGPT."},
        {"messages": [{"role": "user", "content": "Call it"},
                      {"role": "function_call", "content": "{}"}]},
    ]
    source = tmp_path / "data/mllm_demo.jsonl"
    source.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    [report] = import_files("sharegpt", [source], tmp_path / "out")
    assert (report.written, report.rejected) == (2, 1)
    assert report.issues[-1].line == 3 and report.issues[-1].code == "bad-role"
    first, second = read_back(tmp_path / "out/mllm_demo.jsonl")
    assert first.id == "mllm_demo-0000000000" and second.id == "mllm_demo-0000000001"
    assert first.conversations[0].images == ["mllm_demo_data/1.jpg"]
    assert first.conversations[1].user == "What are they doing?"
    assert first.meta == {"system": "Be brief."} and second.meta == {"system": "Classic ShareGPT."}
    assert report.by_code["system-kept-in-meta"] == 2


def test_missing_images_are_warnings_not_drops(tmp_path: Path):
    source = tmp_path / "l.json"
    source.write_text(json.dumps([{"image": "nope.jpg", "conversations": [
        {"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]}]))
    [report] = import_files("llava", [source], tmp_path / "out")
    assert report.written == 1 and report.by_code == {"missing-image": 1}


def test_cli_import_and_export(tmp_path: Path):
    shard = make_dataset(tmp_path / "src")
    runner = CliRunner()
    result = runner.invoke(app, ["export", "sharegpt", str(shard), "--out",
                                 str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    assert "4 rows, 4 written, 0 left out" in result.output
    result = runner.invoke(app, ["import", "sharegpt", str(tmp_path / "x/demo_train.json"),
                                 "--out", str(tmp_path / "y")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "y/manifest.json").is_file()
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image": "a.jpg", "conversations": [{"from": "human", "value": "Q"},'
                   ' {"from": "gpt", "value": "A"}]}]')
    result = runner.invoke(app, ["import", "llava", str(bad), "--out", str(tmp_path / "z"),
                                 "--strict"])
    assert result.exit_code == 1
    assert "error: --strict" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["import", "llava", str(bad), "--out", str(tmp_path / "z")])
    assert result.exit_code == 0
    assert "bad.json:1: [tag-count-mismatch]" in result.output and "1 left out" in result.output
    result = runner.invoke(app, ["export", "hf", str(shard), "--out", str(tmp_path / "w"),
                                 "--hf-layout", "arrow"])
    assert result.exit_code == 2 and "unknown Hugging Face layout 'arrow'" in result.output
    result = runner.invoke(app, ["export", "parquet", str(shard), "--out", str(tmp_path / "w")])
    assert result.exit_code == 2 and "unknown format 'parquet'" in result.output
    result = runner.invoke(app, ["export", "llava", str(tmp_path / "none.jsonl"), "--out",
                                 str(tmp_path / "w")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_export_reports_rows_it_cannot_write(tmp_path: Path):
    records = sample_records()[:1] + [
        {"id": "t", "conversations": [{"images": [], "user": "what is <image>?",
                                       "assistant": "x"}]}]
    shard = make_dataset(tmp_path / "src", records)
    with shard.open("ab") as handle:
        handle.write(b'{"id": 5, "conversations": []}\n')
    [report] = export_files("llava", [shard], tmp_path / "out")
    assert (report.rows, report.written, report.rejected) == (3, 1, 2)
    assert [(issue.line, issue.code) for issue in report.issues] == [
        (2, "literal-tag"), (3, "invalid-record")]
    assert len((tmp_path / "out/demo_train.export-rejected.ndjson").read_text().splitlines()) == 2
