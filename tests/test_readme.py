"""The README's set-up commands are what CI really runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = text.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup, flags=re.DOTALL)


def test_ci_runs_the_readme_test_command():
    commands = readme_commands()
    assert len(commands) == 2, "the README has one main-job and one test command"
    test_command = commands[1].strip()
    assert "pytest" in test_command and "torch==2.13.0" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_library_snippet_runs_and_its_shard_validates(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from phiv_data.shards import load_manifest
    from phiv_data.validate import ValidationOptions, record_validation, validate_paths

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Using the schema in your own pipeline", 1)[1].split("\n### ", 1)[0]
    (snippet,) = re.findall(r"```python\n(.+?)\n```", section, flags=re.DOTALL)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/mine/images/photos").mkdir(parents=True)
    Image.new("RGB", (64, 48), "orange").save(tmp_path / "data/mine/images/photos/cat.jpg")
    exec(compile(snippet, "README.md", "exec"), {})
    assert capsys.readouterr().out == "1 train-0000000000 ['photos/cat.jpg']\n"
    assert load_manifest(tmp_path / "data/mine").shards[0].records == 1
    report = validate_paths([tmp_path / "data/mine/mine_train.jsonl"], ValidationOptions(
        images_root=tmp_path / "data/mine/images", check_images="decode"))
    assert report.errors == 0
    record_validation(report)
    assert load_manifest(tmp_path / "data/mine").shards[0].validation.passed
