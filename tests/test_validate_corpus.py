"""Every malformed input of the corpus produces its issue code, on its line, and no crash."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from phiv_data.validate import CATALOGUE, ValidationOptions, validate_paths
from tests.validate_corpus import CASES, Case


def build(tmp_path: Path, case: Case) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(root / "ok.jpg")
    if case.setup is not None:
        case.setup(root)
    path = tmp_path / "data.jsonl"
    path.write_bytes(case.content)
    return path


def test_corpus_is_large_and_distinct():
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES)
    assert len({case.content for case in CASES}) == len(CASES)
    assert {case.code for case in CASES} <= set(CATALOGUE)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case_reports_code_and_line(tmp_path, case):
    path = build(tmp_path, case)
    report = validate_paths([path], ValidationOptions(workers=1, **case.options))
    found = [(issue.code, issue.line, issue.field) for issue in report.issues]
    assert any(code == case.code and line == case.line for code, line, _ in found), found
    if case.field is not None:
        assert (case.code, case.line, case.field) in found
    # The verdict follows the severity: errors fail, warnings and notes do not.
    assert report.ok is (not case.code.startswith("E-")), report.render_text()
    for issue in report.issues:
        assert issue.code in CATALOGUE
        assert issue.file == str(path) or issue.file.endswith("data.jsonl")


@pytest.mark.parametrize("case", [case for case in CASES if case.line == 2][:12],
                         ids=lambda case: case.name)
def test_strict_fails_on_warnings_only_when_asked(tmp_path, case):
    path = build(tmp_path, case)
    loose = validate_paths([path], ValidationOptions(workers=1, **case.options))
    strict = validate_paths([path], ValidationOptions(workers=1, strict=True, **case.options))
    assert strict.ok is (loose.ok and loose.warnings == 0)
