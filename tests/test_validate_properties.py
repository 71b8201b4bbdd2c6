"""Properties: no input crashes the validator; the fast path agrees with pydantic; the
result does not depend on the number of workers or on how the file is cut."""

from __future__ import annotations

import hashlib
import tempfile
from functools import partial
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from phiv_data.schema import Record
from phiv_data.validate import CATALOGUE, ValidationOptions, validate_paths
from phiv_data.validate import runner as validate_runner
from phiv_data.validate.fastpath import (
    DecodeError,
    check_agreement,
    decode_record,
    meta_accepted,
    with_meta,
)

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])

ints = st.integers(-2**63, 2**63 - 1)  # what orjson can write
json_values = st.recursive(
    st.none() | st.booleans() | ints
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
texts = st.one_of(st.sampled_from(["", " ", "ok", "<|image_1|>", "a\u0007b", "\n"]),
                  st.text(max_size=12))
turns = st.fixed_dictionaries(
    {"user": texts},
    optional={"images": st.lists(st.one_of(texts, ints), max_size=3),
              "assistant": st.one_of(st.none(), texts, ints),
              "extra": ints})
records = st.fixed_dictionaries(
    {},
    optional={"id": st.one_of(texts, ints),
              "conversations": st.one_of(st.lists(turns, max_size=3), json_values),
              "source": st.one_of(st.none(), texts, ints),
              "meta": json_values, "unknown": ints})


def run_on(content: bytes, **options) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.jsonl"
        path.write_bytes(content)
        report = validate_paths([path], ValidationOptions(workers=1, **options))
    assert report.files[0].sha256 == hashlib.sha256(content).hexdigest()  # hashed as read
    lines = content.count(b"\n") + (0 if content.endswith(b"\n") or not content else 1)
    for issue in report.issues:
        assert issue.code in CATALOGUE
        assert issue.line is None or 1 <= issue.line <= lines
    assert report.ok == (report.errors == 0)
    report.render_text()
    orjson.dumps(report.to_dict())


@pytest.mark.parametrize("content", [
    b"", b"\xef\xbb\xbf" + b'{"id": "a"}\r\n', b'{"id": "a"}' * 40_000])
def test_the_recorded_sha256_is_that_of_every_byte_read(content):
    run_on(content)  # BOM, CRLF, no final newline, several read blocks


@PROPERTY_SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(content):
    run_on(content)


@PROPERTY_SETTINGS
@given(st.lists(json_values, max_size=5))
def test_arbitrary_json_lines_never_crash(values):
    run_on(b"".join(orjson.dumps(value) + b"\n" for value in values))


@PROPERTY_SETTINGS
@given(st.lists(records, min_size=1, max_size=4))
def test_record_like_lines_never_crash_with_every_check(values):
    run_on(b"".join(orjson.dumps(value) + b"\n" for value in values),
           check_images="decode", max_length=64)


@PROPERTY_SETTINGS
@given(records)
def test_fast_path_accepts_exactly_what_pydantic_accepts(value):
    line = orjson.dumps(value)
    try:
        Record.model_validate_json(line)
        pydantic_ok = True
    except ValidationError:
        pydantic_ok = False
    try:  # what the chunk validator does: raw meta, checked when present
        fast = decode_record(line)
        fast_ok = (not with_meta([fast]) or meta_accepted(fast, line, line.isascii())) and all(
            turn.assistant is not None for turn in fast.conversations[:-1])
    except DecodeError:
        fast_ok = False
    assert fast_ok == pydantic_ok


@pytest.mark.parametrize(("meta", "code"), [
    (b'{"frames": [0, 8], "fps": 25.0}', None), (b"null", None), (b" {}", None),
    (b"[1, 2]", "E-SCHEMA-TYPE"), (b'"text"', "E-SCHEMA-TYPE"), (b"3", "E-SCHEMA-TYPE"),
    (b"true", "E-SCHEMA-TYPE"), (b'{"a": "\xff"}', "E-UTF8"), (b'{"a": [1,]}', "E-JSON"),
])
def test_raw_meta_is_still_checked(tmp_path, meta, code):
    good = b'{"id": "g%d", "conversations": [{"user": "u", "assistant": "a"}], "meta": {}}\n'
    line = b'{"id": "x", "conversations": [{"user": "u", "assistant": "a"}], "meta": ' + meta
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"".join(good % index for index in range(500)) + line + b"}\n"
                     + good % 999)
    report = validate_paths([path], ValidationOptions(workers=1, check_images="none"))
    found = [(issue.code, issue.line) for issue in report.issues]
    assert found == ([] if code is None else [(code, 501)])
    assert report.files[0].records == 502 - (code is not None)


def test_fast_structs_mirror_the_models():
    assert check_agreement() == []


def test_workers_and_chunking_do_not_change_the_result(tmp_path, monkeypatch):
    good = {"id": "", "conversations": [{"images": [], "user": "u", "assistant": "a"}]}
    lines = []
    for index in range(3000):
        value = dict(good, id=f"id-{index % 2900}")
        lines.append(orjson.dumps(value))
        if index % 500 == 7:
            lines.append(b'{"id": 1}')
        if index % 700 == 3:
            lines.append(b"")
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    one = validate_paths([path], ValidationOptions(workers=1))
    monkeypatch.setattr(validate_runner, "MIN_CHUNK_BYTES", 4096)
    tasks = validate_runner.plan_chunks(validate_runner.resolve_inputs([path], one.options),
                                        one.options, 2)
    assert len(tasks) > 4
    two = validate_paths([path], ValidationOptions(workers=2))
    assert [str(issue) for issue in two.issues] == [str(issue) for issue in one.issues]
    assert two.files[0].sha256 == one.files[0].sha256
    assert two.files[0].records == one.files[0].records == 3000
    duplicates = [issue for issue in one.issues if issue.code == "E-ID-DUPLICATE"]
    assert len(duplicates) == 100 and duplicates[0].message.startswith("duplicate id 'id-0'")


@pytest.mark.parametrize("limit", [1024, 4096])
@pytest.mark.parametrize("times", [5, 1.5])
def test_long_lines_are_reported_without_reading_them_whole(tmp_path, limit, times):
    # 1.5x the limit: the line spans two blocks and is met whole, valid JSON, yet too long.
    good = orjson.dumps({"id": "a", "conversations": [{"user": "u", "assistant": "a"}]})
    huge = orjson.dumps({"id": "h" + "x" * int(limit * times), "conversations": [
        {"user": "u", "assistant": "a"}]})
    path = tmp_path / "data.jsonl"
    path.write_bytes(good + b"\n" + huge + b"\n" + good.replace(b'"a"', b'"b"', 1) + b"\n")
    report = validate_paths([path], ValidationOptions(workers=1, max_line_bytes=limit))
    assert [(issue.code, issue.line) for issue in report.issues] == [("E-LINE-TOO-LONG", 2)]
    assert report.files[0].records == 2 and report.files[0].lines == 3
    assert report.files[0].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_lines_longer_than_a_read_block_are_validated_whole(tmp_path):
    # Blocks are small (cache-sized); a line spanning several of them is still one record.
    from phiv_data.validate.chunk import BLOCK_BYTES

    def line(record_id, user):
        return orjson.dumps({"id": record_id, "conversations": [{"user": user,
                                                                 "assistant": "a"}]})

    long_text = "word " * (BLOCK_BYTES * 3 // 5)
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join([line("a", "short"), line("b", long_text),
                                 line("c", long_text + "<|end|>"), line("a", "dup")]) + b"\n")
    report = validate_paths([path], ValidationOptions(workers=1))
    assert [(issue.code, issue.line) for issue in report.issues] == [
        ("E-TEXT-SPECIAL", 3), ("E-ID-DUPLICATE", 4)]
    assert report.files[0].records == 4


def test_decoding_over_several_workers_gives_the_same_report(tmp_path):
    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    for index in range(40):
        Image.new("RGB", (24, 16), (index, 0, 0)).save(root / f"f{index}.png")
    (root / "copy.png").write_bytes((root / "f3.png").read_bytes())
    (root / "empty.png").write_bytes(b"")
    Image.new("P", (8, 8)).save(root / "palette.png")
    lines = []
    for index in range(400):
        images = [f"f{(index + k) % 40}.png" for k in range(3)]
        if index % 97 == 5:
            images.append(["copy.png", "empty.png", "palette.png"][index % 3])
        lines.append(orjson.dumps({"id": f"r{index}", "conversations": [
            {"images": images, "user": "Describe the frames. " * 8, "assistant": "ok"}]}))
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    options = {"check_images": "decode", "max_length": 8000}
    one = validate_paths([path], ValidationOptions(workers=1, **options))
    tasks = validate_runner.plan_chunks(validate_runner.resolve_inputs([path], one.options),
                                        ValidationOptions(workers=2, **options), 2)
    assert len(tasks) > 2  # a ~100 KiB file is cut into several chunks when decoding
    two = validate_paths([path], ValidationOptions(workers=2, **options))
    assert [str(issue) for issue in two.issues] == [str(issue) for issue in one.issues]
    assert {issue.code for issue in one.issues} == {
        "W-IMAGE-DUPLICATE", "E-IMAGE-EMPTY", "W-IMAGE-MODE"}
    assert two.files[0].token_lengths == one.files[0].token_lengths


def test_a_second_run_in_the_same_process_sees_changed_files(tmp_path):
    # Workers keep what they learnt about images across the chunks of one run only.
    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (24, 16)).save(root / "a.png")
    path = tmp_path / "data.jsonl"
    path.write_bytes(orjson.dumps({"id": "r", "conversations": [
        {"images": ["a.png"], "user": "u", "assistant": "a"}]}) + b"\n")
    for check_images in ("exists", "decode"):
        assert validate_paths([path], ValidationOptions(workers=1, check_images=check_images)).ok
    (root / "a.png").write_bytes(b"")
    decoded = validate_paths([path], ValidationOptions(workers=1, check_images="decode"))
    assert [issue.code for issue in decoded.issues] == ["E-IMAGE-EMPTY"]
    (root / "a.png").unlink()
    exists = validate_paths([path], ValidationOptions(workers=1))
    assert [issue.code for issue in exists.issues] == ["E-IMAGE-MISSING"]


@pytest.mark.parametrize("last", [
    b'{"id": 1, "conversations": [{"user": "u", "assistant": "a"}]}',  # schema error
    b'{"id": "z", "conversations": [{"user": "u", "assistant": "a"}]} x',  # JSON error
    b'{"id": "z", "conversations": [{"user": "u", "assistant": "a<|end|>"}]}\r',
    b"\r",  # a blank CRLF line
    b'{"id": "' + b"x" * 3000 + b'"}',  # too long
])
def test_the_last_line_is_judged_the_same_with_or_without_a_newline(tmp_path, last):
    # Lines reach the decoder with their "\n"; a last line without one must not differ.
    first = b'{"id": "a", "conversations": [{"user": "u", "assistant": "a"}]}\n'
    reports = []
    for ending in (b"", b"\n"):
        path = tmp_path / f"data{len(ending)}.jsonl"
        path.write_bytes(first + last + ending)
        reports.append(validate_paths([path], ValidationOptions(workers=1,
                                                                max_line_bytes=2048)))
    without, with_newline = reports
    assert [(issue.code, issue.line, issue.field, issue.message) for issue in without.issues
            ] == [(issue.code, issue.line, issue.field, issue.message)
                  for issue in with_newline.issues]
    codes = {issue.code for issue in without.issues}
    assert codes & {"E-SCHEMA-TYPE", "E-JSON", "E-TEXT-SPECIAL", "W-BLANK-LINE",
                    "E-LINE-TOO-LONG"}, codes
    assert all(issue.line == 2 for issue in without.issues if issue.line is not None)
    assert without.files[0].lines == with_newline.files[0].lines == 2
    assert ("W-CRLF" in codes) == last.endswith(b"\r")


def test_read_pieces_and_blocks_do_not_change_the_result(tmp_path, monkeypatch):
    # The runner's reading thread hands over pieces that the validator cuts into blocks;
    # lines, BOM, CRLF and duplicates that straddle either boundary are found all the same.
    from phiv_data.validate import chunk

    lines = [b'\xef\xbb\xbf{"id": "a", "conversations": [{"user": "u", "assistant": "x"}]}']
    for index in range(400):
        text = "w" * (index % 37) + ("<|end|>" if index % 101 == 50 else "")
        lines.append(orjson.dumps({"id": f"r{index % 390}", "conversations": [
            {"user": text or " ", "assistant": "a"}]}) + (b"\r" if index % 150 == 9 else b""))
        if index % 120 == 11:
            lines.append(b'{"id": 1}')
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    default = validate_paths([path], ValidationOptions(workers=1))
    for read_bytes, block_bytes in [(1000, 300), (257, 257), (4096, 1024)]:
        monkeypatch.setattr(chunk, "READ_BYTES", read_bytes)
        monkeypatch.setattr(chunk, "BLOCK_BYTES", block_bytes)
        small = validate_paths([path], ValidationOptions(workers=1))
        assert [str(issue) for issue in small.issues] == [str(issue) for issue in default.issues]
        assert small.files[0].sha256 == default.files[0].sha256 == hashlib.sha256(
            path.read_bytes()).hexdigest()
        assert small.files[0].records == default.files[0].records == 401
    codes = {issue.code for issue in default.issues}
    assert {"E-BOM", "W-CRLF", "E-ID-DUPLICATE", "E-TEXT-BLANK", "E-TEXT-SPECIAL",
            "E-SCHEMA-TYPE"} <= codes


def test_an_error_while_validating_stops_the_reading_thread(tmp_path, monkeypatch):
    import threading

    from phiv_data.validate import chunk

    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"id": "a", "conversations": [{"user": "u", "assistant": "a"}]}\n'
                     * 20_000)
    monkeypatch.setattr(chunk, "READ_BYTES", 4096)  # far more pieces than are read ahead

    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(chunk._ChunkValidator, "_process", fail)
    with pytest.raises(RuntimeError, match="boom"):
        validate_paths([path], ValidationOptions(workers=1))
    assert not [thread for thread in threading.enumerate()
                if thread.name == "phiv-validate-read"]


def test_a_read_error_reaches_the_caller(tmp_path, monkeypatch):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"id": "a", "conversations": [{"user": "u", "assistant": "a"}]}\n')

    def unreadable(*args, **kwargs):
        raise OSError(5, "Input/output error")
        yield b""  # a generator, like the real one

    monkeypatch.setattr(validate_runner, "read_pieces", unreadable)
    with pytest.raises(OSError, match="Input/output error"):
        validate_paths([path], ValidationOptions(workers=1))


def _fail_at(start, task):
    from phiv_data.validate.chunk import validate_chunk

    if task.start == start:
        raise RuntimeError("worker lost its disk")
    return validate_chunk(task)


def test_a_failing_worker_is_one_error_naming_the_cause(tmp_path, monkeypatch):
    # Results are merged as they arrive; a worker that fails midway still ends the run with
    # a DataError saying what failed and what to do, not a traceback or a partial report.
    from phiv_data.errors import DataError

    path = tmp_path / "data.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"id": f"r{index}", "conversations": [
        {"user": "u" * 40, "assistant": "a"}]}) + b"\n" for index in range(2000)))
    monkeypatch.setattr(validate_runner, "MIN_CHUNK_BYTES", 4096)
    options = ValidationOptions(workers=2, check_images="none")
    tasks = validate_runner.plan_chunks(validate_runner.resolve_inputs([path], options),
                                        options, 2)
    assert len(tasks) > 4
    monkeypatch.setattr(validate_runner, "validate_chunk", partial(_fail_at, tasks[2].start))
    with pytest.raises(DataError) as raised:
        validate_paths([path], options)
    assert "RuntimeError: worker lost its disk" in str(raised.value)
    assert "--workers 1" in raised.value.hint


_LINE_KINDS = st.sampled_from([
    b'{"id": "r", "conversations": [{"user": "u", "assistant": "a"}]}',
    b'{"id": "q", "conversations": [{"user": " ", "assistant": "x<|end|>"}]}',
    b'{"id": "n", "conversations": [{"user": "u", "assistant": null}]}',
    b'{"id": 7, "conversations": []}',
    b'{"id": "t", "conversations": [',
    b'{"id": "m", "conversations": [{"user": "u", "assistant": "a"}], "meta": {"k": "\xc3\xa9"}}',
    b'{"id": "b", "conversations": [{"user": "u\xff", "assistant": "a"}]}',
    b"", b"  ", b"[1]",
])


@st.composite
def jsonl_files(draw) -> bytes:
    """Files of known good and bad lines, some long, some ending in CR, with or without a
    final newline or a BOM: every boundary case of the block reader."""
    lines = []
    for index in range(draw(st.integers(0, 40))):
        line = draw(_LINE_KINDS).replace(b'"id": "', b'"id": "%d' % (index % 9), 1)
        if draw(st.integers(0, 9)) == 0:  # long: 0.5x to 3x the 1024-byte limit below
            line = b'{"id": "L%d", "conversations": [{"user": "%s", "assistant": "a"}]}' % (
                index, b"w" * draw(st.integers(500, 3000)))
        lines.append(line + (b"\r" if draw(st.integers(0, 9)) == 0 else b""))
    content = b"\n".join(lines) + (b"\n" if draw(st.booleans()) else b"")
    return (b"\xef\xbb\xbf" if draw(st.integers(0, 9)) == 0 else b"") + content


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jsonl_files())
def test_how_a_file_is_read_never_changes_the_report(content):
    # The same file read whole, in tiny pieces and blocks, and cut over two workers must
    # give the same issues and counts (this found long lines met whole being accepted).
    from phiv_data.validate import chunk

    def report(workers=1, read_bytes=None, block_bytes=None, min_chunk=None):
        saved = chunk.READ_BYTES, chunk.BLOCK_BYTES, validate_runner.MIN_CHUNK_BYTES
        chunk.READ_BYTES = read_bytes or saved[0]
        chunk.BLOCK_BYTES = block_bytes or saved[1]
        validate_runner.MIN_CHUNK_BYTES = min_chunk or saved[2]
        try:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "data.jsonl"
                path.write_bytes(content)
                found = validate_paths([path], ValidationOptions(
                    workers=workers, check_images="none", max_line_bytes=1024))
        finally:
            chunk.READ_BYTES, chunk.BLOCK_BYTES, validate_runner.MIN_CHUNK_BYTES = saved
        summary = found.files[0]
        return ([(issue.code, issue.line, issue.field) for issue in found.issues],
                summary.lines, summary.records, dict(summary.labels), summary.sha256)

    whole = report()
    assert report(read_bytes=700, block_bytes=300) == whole
    assert report(workers=2, min_chunk=2048) == whole
    assert all(line is None or line >= 1 for _, line, _ in whole[0])
