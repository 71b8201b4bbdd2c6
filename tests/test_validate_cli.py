"""`phiv-data validate` from the command line: exit codes, output, manifest recording."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from PIL import Image
from typer.testing import CliRunner

from phiv_data import ManifestError, load_manifest, verify_dataset, write_records
from phiv_data.cli import app
from phiv_data.manifest import Manifest
from phiv_data.shards import save_manifest, sha256_file
from phiv_data.validate.issues import CATALOGUE, FIXES
from phiv_data.validate.report import catalogue_markdown

runner = CliRunner()


def record(record_id, images=("a.jpg",), assistant="yes", user="What?"):
    return {"id": record_id, "conversations": [{"images": list(images), "user": user,
                                                 "assistant": assistant}]}


def make_dataset(directory, name="set_train.jsonl", records=None, images_dir="images"):
    root = directory / images_dir
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (30, 20), (3, 4, 5)).save(root / "a.jpg")
    path = directory / name
    records = records if records is not None else [record("r1"), record("r2")]
    path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in records))
    return path


def invoke(*args):
    return runner.invoke(app, ["validate", *map(str, args)])


def test_valid_file_exits_zero_and_creates_the_manifest(tmp_path):
    path = make_dataset(tmp_path)
    result = invoke(path)
    assert result.exit_code == 0, result.output
    assert "VALID: 0 error(s)" in result.output
    manifest = load_manifest(tmp_path)
    shard = manifest.shard("set_train.jsonl")
    assert shard.split == "train" and shard.images_root == "images"
    assert shard.records == 2 and shard.images == 2
    assert shard.validation.passed and shard.validation.sha256 == sha256_file(path)
    assert {check.name for check in shard.validation.checks} == {"syntax", "schema", "dataset"}
    directory, _ = verify_dataset(tmp_path)
    assert directory == tmp_path


def test_tampered_file_fails_verification(tmp_path):
    path = make_dataset(tmp_path)
    assert invoke(path).exit_code == 0
    with open(path, "ab") as handle:
        handle.write(orjson.dumps(record("r3")) + b"\n")
    with pytest.raises(ManifestError, match="bytes changed"):
        verify_dataset(tmp_path)
    assert invoke(path).exit_code == 0  # validating again vouches for the new bytes
    verify_dataset(tmp_path)


def test_validating_again_with_the_same_outcome_keeps_the_manifest_bytes(tmp_path):
    path = make_dataset(tmp_path)
    assert invoke(path).exit_code == 0
    manifest = load_manifest(tmp_path)  # stamp it in the past: a rewrite would show
    shard = manifest.shard("set_train.jsonl")
    old = shard.validation.replace(validated_at="2001-01-01T00:00:00+00:00")
    save_manifest(tmp_path, manifest.replace(shards=[shard.replace(validation=old)]))
    first = (tmp_path / "manifest.json").read_bytes()
    result = invoke(path)
    assert result.exit_code == 0 and "recorded in" in result.output
    assert (tmp_path / "manifest.json").read_bytes() == first  # a re-run changes nothing
    assert invoke(path, "--check-images", "decode").exit_code == 0  # another check
    validation = load_manifest(tmp_path).shard("set_train.jsonl").validation
    assert validation.validated_at != "2001-01-01T00:00:00+00:00"
    assert "media" in {check.name for check in validation.checks}


def test_invalid_file_exits_one_and_creates_no_manifest(tmp_path):
    path = make_dataset(tmp_path, records=[record("r1"), record("r1", images=["gone.jpg"])])
    result = invoke(path)
    assert result.exit_code == 1
    assert f"{path.name}:2: conversations[0].images[0]: [E-IMAGE-MISSING]" in result.output
    assert f"{path.name}:2: id: [E-ID-DUPLICATE]" in result.output
    assert "INVALID" in result.output
    assert not (tmp_path / "manifest.json").exists()


def test_failure_is_recorded_in_an_existing_manifest(tmp_path):
    shard = write_records(tmp_path / "set_val.jsonl", [record("r1"), record("r2")], split="val")
    save_manifest(tmp_path, Manifest(shards=[shard]))
    (tmp_path / "images").mkdir()
    result = invoke(tmp_path / "set_val.jsonl")
    assert result.exit_code == 1  # a.jpg is missing
    entry = load_manifest(tmp_path).shard("set_val.jsonl")
    assert entry.validation is not None and not entry.validation.passed
    assert entry.validation.errors == 2 and entry.split == "val"
    with pytest.raises(ManifestError, match="failed validation"):
        verify_dataset(tmp_path)


def test_images_root_comes_from_the_manifest(tmp_path):
    shard = write_records(tmp_path / "set_train.jsonl", [record("r1")], split="train",
                          images_root="media")
    save_manifest(tmp_path, Manifest(shards=[shard]))
    (tmp_path / "media").mkdir()
    Image.new("RGB", (30, 20)).save(tmp_path / "media" / "a.jpg")
    assert invoke(tmp_path / "set_train.jsonl").exit_code == 0
    assert load_manifest(tmp_path).shard("set_train.jsonl").images_root == "media"
    verify_dataset(tmp_path)


def test_directory_argument_validates_every_jsonl(tmp_path):
    make_dataset(tmp_path, "set_train.jsonl")
    make_dataset(tmp_path, "set_val.jsonl", records=[record("v1", images=[])])
    result = invoke(tmp_path, "--format", "json", "--no-manifest")
    assert result.exit_code == 0
    document = json.loads(result.output)
    assert [item["split"] for item in document["files"]] == ["train", "val"]
    assert document["totals"]["records"] == 3
    assert not (tmp_path / "manifest.json").exists()


def test_json_lists_every_issue_beyond_max_errors(tmp_path):
    path = make_dataset(tmp_path, records=[record(str(index), images=["gone.jpg"])
                                           for index in range(5)])
    text = invoke(path, "--max-errors", "2", "--no-manifest")
    assert text.exit_code == 1
    assert text.output.count("[E-IMAGE-MISSING]") == 2
    assert "3 more issue(s) not shown" in text.output
    result = invoke(path, "--format", "json", "--max-errors", "2", "--no-manifest")
    document = json.loads(result.output)
    assert result.exit_code == 1 and document["ok"] is False
    assert [issue["line"] for issue in document["issues"]] == [1, 2, 3, 4, 5]
    assert document["issues"][0] == {
        "code": "E-IMAGE-MISSING", "severity": "error", "file": document["files"][0]["file"],
        "line": 1, "field": "conversations[0].images[0]", "record_id": "0",
        "message": document["issues"][0]["message"]}
    assert document["counts_by_code"] == {"E-IMAGE-MISSING": 5}


def test_strict_turns_warnings_into_failure(tmp_path):
    path = make_dataset(tmp_path, records=[record("r1", user="tab\u0001here")])
    assert invoke(path, "--no-manifest").exit_code == 0
    assert invoke(path, "--strict", "--no-manifest").exit_code == 1


def test_summary_shows_counts_labels_and_token_percentiles(tmp_path):
    records = [record(f"r{index}", assistant=label) for index, label in
               enumerate(["cat", "dog", "cat", None])]
    path = make_dataset(tmp_path, records=records)
    result = invoke(path, "--max-length", "4096", "--no-manifest")
    assert result.exit_code == 0, result.output
    assert "records: 4 in 1 file(s), 1 unlabeled" in result.output
    assert "images per record: 1: 4" in result.output
    assert "'cat': 2, 'dog': 1" in result.output
    assert "tokens per record (estimated, num_crops=4): p50" in result.output
    assert "[I-UNLABELED]" in result.output


@pytest.mark.parametrize("args", [
    ["missing.jsonl"],
    ["{file}", "--check-images", "sometimes"],
    ["{file}", "--format", "xml"],
    ["{file}", "--max-length", "0"],
    ["{file}", "--workers", "0"],
    ["{file}", "--tokenizer", "{dir}"],
    ["{file}", "--images-root", "{dir}/no-such-folder"],
    [],
])
def test_usage_errors_exit_two_without_traceback(tmp_path, args):
    path = make_dataset(tmp_path)
    result = invoke(*[arg.format(file=path, dir=tmp_path) for arg in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_codes_lists_the_catalogue_with_fixes():
    result = runner.invoke(app, ["validate", "--codes"])
    assert result.exit_code == 0
    for code in CATALOGUE:
        assert code in result.output and FIXES[code] in result.output
    assert set(FIXES) == set(CATALOGUE)
    assert all(fix.endswith(".") for fix in FIXES.values())


def test_readme_issue_table_is_the_catalogue():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Validating a dataset\n", 1)[1].split("\n## ", 1)[0]
    table = section.split("<!-- validate-codes:start -->\n", 1)[1].split(
        "\n<!-- validate-codes:end -->", 1)[0]
    assert table == catalogue_markdown(), (
        "README's issue table is stale: paste the output of `python -c 'from "
        "phiv_data.validate.report import catalogue_markdown; print(catalogue_markdown())'`")
    for option in ("--check-images", "--max-length", "--num-crops", "--tokenizer", "--strict",
                   "--max-errors", "--workers", "--format json", "--no-manifest"):
        assert option in section


@pytest.mark.parametrize("args", [
    ["validate", "--help"], ["convert", "--help"], ["convert", "ucf101", "--help"],
    ["validate"], ["schema", "--help"]])
def test_the_entry_point_builds_only_the_invoked_command_with_the_same_behaviour(args):
    from phiv_data.cli import invoked_only

    narrowed = invoked_only(app, args)
    assert narrowed is not app
    assert len(narrowed.registered_commands) + len(narrowed.registered_groups) == 1
    full, fast = runner.invoke(app, args), runner.invoke(narrowed, args)
    assert (fast.exit_code, fast.output) == (full.exit_code, full.output)


@pytest.mark.parametrize("args", [[], ["--help"], ["valdate"], ["-h", "validate"]])
def test_help_and_unknown_commands_get_the_full_app(args):
    from phiv_data.cli import invoked_only

    assert invoked_only(app, args) is app
