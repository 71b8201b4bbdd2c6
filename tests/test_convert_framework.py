"""The converter framework: output, determinism, resume, skips, crashes, fan-out and join."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import orjson
import pytest

from phiv_data.convert import workdir
from phiv_data.convert.framework import (
    Converted,
    MediaFile,
    Plan,
    RunOptions,
    Skipped,
    WorkItem,
    part_range,
    run_conversion,
)
from phiv_data.convert.join import join_parts
from phiv_data.errors import DataError, ManifestError, MediaError, UsageError
from phiv_data.shards import load_manifest, read_records

SPLITS = {"train": "toy_train.jsonl", "val": "toy_val.jsonl"}


def toy_row(item: WorkItem, *, suffix: str = "") -> Converted | Skipped:
    """Row function of a toy dataset: payload is (id, number)."""
    record_id, number = item.payload
    if number % 7 == 3:
        return Skipped("bad-number", f"{number} leaves 3 modulo 7")
    if number % 11 == 5:
        raise MediaError(f"number {number} has no picture")
    if number == 1000:
        os._exit(9)  # a crashing decoder
    path = f"{item.split}/{number:04d}.bin"
    notes = ["even number doubled"] if number % 2 == 0 else []
    return Converted(
        record={"id": record_id, "source": "toy",
                "conversations": [{"images": [path], "user": f"what is {number}?{suffix}",
                                   "assistant": str(number)}], "meta": {"n": number}},
        media=[MediaFile(path, data=f"{number}".encode() * 50)], notes=notes)


def toy_plan(count: int = 40, *, suffix: str = "", extra: tuple[int, ...] = ()) -> Plan:
    numbers = list(range(count)) + list(extra)
    items = [WorkItem(key=f"n{number}", split="train" if i < 0.8 * len(numbers) else "val",
                      payload=(f"toy-{i:04d}", number)) for i, number in enumerate(numbers)]
    return Plan(dataset="toy", items=items, process=functools.partial(toy_row, suffix=suffix),
                options={"suffix": suffix}, shard_names=SPLITS, notes=["a toy plan"],
                unit="numbers")


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root except the manifest, by relative path."""
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file() and path.name != "manifest.json"}


def test_writes_records_media_report_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = run_conversion(toy_plan(), out, RunOptions(workers=1))
    records = [record for _, record in read_records(out / "toy_train.jsonl")]
    assert [record.id for record in records][:3] == ["toy-0000", "toy-0001", "toy-0002"]
    assert (out / "images/train/0000.bin").read_bytes() == b"0" * 50
    skipped = {entry.key: entry.reason for entry in report.skipped}
    assert skipped == {"n3": "bad-number", "n10": "bad-number", "n17": "bad-number",
                       "n24": "bad-number", "n31": "bad-number", "n38": "bad-number",
                       "n5": "media-error", "n16": "media-error", "n27": "media-error"}
    assert report.planned == {"train": 32, "val": 8}
    assert report.records["train"] + report.records["val"] == 40 - len(skipped)
    assert {note.key for note in report.changed} >= {"n0", "n2"}
    manifest = load_manifest(out)
    assert [shard.file for shard in manifest.shards] == ["toy_train.jsonl", "toy_val.jsonl"]
    assert manifest.report == report.to_dict()
    assert manifest.report["skipped_by_reason"] == {"bad-number": 6, "media-error": 3}
    assert manifest.producer["workers"] == 1 and "seconds" in manifest.producer
    assert "seconds" not in orjson.dumps(manifest.report).decode()
    assert not (out / workdir.WORK_DIR).exists()


def test_output_is_identical_for_any_worker_count(tmp_path: Path) -> None:
    run_conversion(toy_plan(), tmp_path / "one", RunOptions(workers=1))
    run_conversion(toy_plan(), tmp_path / "two", RunOptions(workers=2))
    assert tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "two")
    assert load_manifest(tmp_path / "one").report == load_manifest(tmp_path / "two").report


def test_worker_crash_is_reported_and_run_finishes(tmp_path: Path) -> None:
    report = run_conversion(toy_plan(12, extra=(1000,)), tmp_path / "out", RunOptions(workers=2))
    crashed = [entry for entry in report.skipped if entry.reason == "worker-crashed"]
    assert [entry.key for entry in crashed] == ["n1000"]
    assert report.records["train"] + report.records["val"] == 12 - 3  # n3, n5, n10 skipped


def test_rerun_of_finished_conversion_does_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_conversion(toy_plan(), out, RunOptions(workers=1))
    before = tree_bytes(out)
    manifest = (out / "manifest.json").read_bytes()
    again = run_conversion(toy_plan(), out, RunOptions(workers=1))
    assert again.to_dict() == first.to_dict()
    assert tree_bytes(out) == before and (out / "manifest.json").read_bytes() == manifest


def test_resume_from_journal_with_torn_line_and_temporaries(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    run_conversion(toy_plan(), reference, RunOptions(workers=1))
    out = tmp_path / "out"
    plan = toy_plan()

    class Stop(BaseException):  # like a kill: not caught as a skip
        pass

    # Simulate a kill: journal 15 items, then a torn line, a stray temporary, an image
    # whose journal line never made it.
    calls = {"n": 0}

    def dying(item: WorkItem) -> Converted | Skipped:
        calls["n"] += 1
        if calls["n"] > 15:
            raise Stop
        return toy_row(item)

    with pytest.raises(Stop):
        run_conversion(Plan(**{**plan.__dict__, "process": dying}), out, RunOptions(workers=1))
    work = out / workdir.WORK_DIR
    with open(work / "journal.jsonl", "ab") as handle:
        handle.write(b'{"p": 15, "k": "n15", "r"')
    (work / "tmp" / "123.4.tmp").write_bytes(b"partial")
    lost = out / "images/train/0012.bin"
    lost.unlink()  # media of a journaled item gone: it must be redone
    assert not (out / "manifest.json").exists()

    executed: list[str] = []

    def counting(item: WorkItem) -> Converted | Skipped:
        executed.append(item.key)
        return toy_row(item)

    run_conversion(Plan(**{**plan.__dict__, "process": counting}), out, RunOptions(workers=1))
    assert "n0" not in executed and "n12" in executed and "n15" in executed
    # from the torn line on, plus the three earlier skips (n3, n5, n10), which are retried
    assert sorted(executed[:3]) == ["n10", "n3", "n5"] and len(executed) == 40 - 15 + 1 + 3
    assert tree_bytes(out) == tree_bytes(reference)
    assert not work.exists()


def test_unfinished_conversion_with_other_options_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(DataError):
        run_conversion(toy_plan(), out, RunOptions(workers=1, strict=True))
    with pytest.raises(UsageError, match=r"options differ \(suffix: '' -> '!'\)"):
        run_conversion(toy_plan(suffix="!"), out, RunOptions(workers=1))
    with pytest.raises(UsageError, match="input files differ"):
        run_conversion(toy_plan(39), out, RunOptions(workers=1))
    report = run_conversion(toy_plan(), out, RunOptions(workers=1))  # finishes the first
    assert report.records["train"] > 0


def test_strict_stops_at_first_skip_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"n3: bad-number: 3 leaves 3 modulo 7"):
        run_conversion(toy_plan(), tmp_path / "out", RunOptions(workers=1, strict=True))


def needs_file_row(item: WorkItem) -> Converted | Skipped:
    """Row function whose input (a file named in the payload) may be missing."""
    source = Path(item.payload)
    if not source.is_file():
        return Skipped("missing-input", f"{source.name} is missing")
    return Converted(record={"id": item.key, "conversations": [
        {"images": [], "user": "what does it say?", "assistant": source.read_text()}]})


def test_rerun_after_fixing_a_skipped_item_converts_it(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("a", "c"):
        (inputs / name).write_text(name.upper())
    plan = Plan(dataset="files", items=[WorkItem(key=name, split="train",
                                                 payload=str(inputs / name)) for name in "abc"],
                process=needs_file_row, options={}, shard_names={"train": "files_train.jsonl"})
    out = tmp_path / "out"
    with pytest.raises(DataError, match="missing-input"):
        run_conversion(plan, out, RunOptions(workers=1, strict=True))
    (inputs / "b").write_text("B")  # the fix the error asks for
    report = run_conversion(plan, out, RunOptions(workers=1, strict=True))
    assert report.skipped == []
    assert [record.conversations[0].assistant
            for _, record in read_records(out / "files_train.jsonl")] == ["A", "B", "C"]


def test_non_empty_output_directory_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not empty"):
        run_conversion(toy_plan(), out, RunOptions(workers=1))
    assert (out / "precious.txt").read_text() == "keep me"


def test_finished_output_with_other_options_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_conversion(toy_plan(), out, RunOptions(workers=1))
    with pytest.raises(UsageError, match="already holds a finished conversion"):
        run_conversion(toy_plan(suffix="?"), out, RunOptions(workers=1))


def test_bad_media_path_is_a_skip_not_a_write_outside(tmp_path: Path) -> None:
    def escaping(item: WorkItem) -> Converted:
        return Converted(record={"id": "x", "conversations": [
            {"images": ["../x.bin"], "user": "u", "assistant": "a"}]},
            media=[MediaFile("../x.bin", data=b"x")])

    plan = Plan(dataset="toy", items=[WorkItem("a", "train")], process=escaping, options={},
                shard_names=SPLITS)
    report = run_conversion(plan, tmp_path / "out", RunOptions(workers=1))
    assert report.skipped[0].reason == "data-error"
    assert not (tmp_path / "out" / "x.bin").exists()


def test_part_ranges_cover_the_plan_once() -> None:
    for total in (0, 1, 7, 40):
        for count in (1, 2, 3, 8):
            covered = [p for index in range(count) for p in part_range(total, count, index)]
            assert covered == list(range(total))
    with pytest.raises(UsageError, match="shard-index"):
        part_range(10, 2, 2)


def test_fan_out_and_join_equal_a_single_run(tmp_path: Path) -> None:
    single = tmp_path / "single"
    run_conversion(toy_plan(), single, RunOptions(workers=1))
    parts = []
    for index in (2, 0, 1):
        part = tmp_path / f"part{index}"
        report = run_conversion(toy_plan(), part, RunOptions(workers=1, num_shards=3,
                                                             shard_index=index))
        assert report.part == (index, 3)
        parts.append(part)
    with pytest.raises(UsageError, match=r"missing \[1\]"):
        join_parts(parts[:1] + parts[1:2], tmp_path / "bad")
    joined = tmp_path / "joined"
    report = join_parts(parts, joined, mode="copy")
    assert tree_bytes(joined) == tree_bytes(single)
    single_manifest, joined_manifest = load_manifest(single), load_manifest(joined)
    assert joined_manifest.report == single_manifest.report == report.to_dict()
    assert [shard.to_dict() for shard in joined_manifest.shards] == [
        shard.to_dict() for shard in single_manifest.shards]
    # a joined dataset counts as the finished single run
    assert run_conversion(toy_plan(), joined, RunOptions(workers=1)).to_dict() == report.to_dict()


def test_join_refuses_unfinished_or_foreign_parts(tmp_path: Path) -> None:
    run_conversion(toy_plan(), tmp_path / "a", RunOptions(workers=1, num_shards=2, shard_index=0))
    run_conversion(toy_plan(suffix="x"), tmp_path / "b",
                   RunOptions(workers=1, num_shards=2, shard_index=1))
    with pytest.raises(UsageError, match="another conversion"):
        join_parts([tmp_path / "a", tmp_path / "b"], tmp_path / "joined")
    (tmp_path / "c").mkdir()
    with pytest.raises(ManifestError, match="part not finished"):
        join_parts([tmp_path / "a", tmp_path / "c"], tmp_path / "joined")


def test_progress_lines_in_a_log() -> None:
    import io

    from phiv_data.convert.progress import Progress

    stream = io.StringIO()
    progress = Progress(4, label="convert toy", unit="numbers", enabled=True, stream=stream,
                        log_every=0.0)
    progress.resume(2, skipped=1)
    progress.update()
    progress.update(skipped=1)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("convert toy: 3/4 numbers (75.0%), ")
    assert lines[-1].startswith("convert toy: 4/4 numbers (100.0%)")
    assert lines[-1].endswith("2 skipped") and len(lines) == 2  # the final line once
    quiet = io.StringIO()
    silent = Progress(4, label="x", enabled=None, stream=quiet)  # shows only after 2 s
    silent.update(4)
    silent.close()
    assert quiet.getvalue() == ""


def test_place_file_links_copies_moves_and_reuses(tmp_path: Path) -> None:
    from phiv_data.shards import place_file

    source = tmp_path / "source.bin"
    source.write_bytes(b"page" * 10)
    place_file(source, tmp_path / "out" / "linked.bin")
    assert os.path.samefile(source, tmp_path / "out" / "linked.bin")
    place_file(source, tmp_path / "out" / "copied.bin", mode="copy")
    copied = tmp_path / "out" / "copied.bin"
    assert copied.read_bytes() == source.read_bytes() and not os.path.samefile(source, copied)
    copied.write_bytes(b"x" * 40)  # same size, other bytes
    place_file(source, copied, mode="copy", reuse_same_size=True)
    assert copied.read_bytes() == b"x" * 40  # an earlier run's file is kept
    place_file(source, copied, mode="copy")
    assert copied.read_bytes() == source.read_bytes()  # replaced otherwise
    temp = tmp_path / "tmp"
    temp.mkdir()
    place_file(source, tmp_path / "moved" / "m.bin", mode="move", temp_dir=temp)
    assert not source.exists() and (tmp_path / "moved" / "m.bin").read_bytes() == b"page" * 10
    assert sorted(path.name for path in tmp_path.rglob("*.tmp")) == []
    with pytest.raises(ValueError, match="mode must be one of"):
        place_file(copied, tmp_path / "z", mode="symlink")
