"""``phiv-data convert ucf101``, ``join`` and resuming after SIGKILL, through the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner
from video_factory import make_subset_tree

from phiv_data.cli import app
from phiv_data.convert.workdir import WORK_DIR
from phiv_data.demo import write_synthetic_clip
from phiv_data.shards import load_manifest

runner = CliRunner()


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file() and path.name != "manifest.json"}


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_subset_tree(tmp_path_factory.mktemp("cli") / "UCF101_subset",
                            per_split={"train": 3, "val": 1, "test": 2})


def test_convert_announces_layout_and_summarises(subset: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["convert", "ucf101", "--src", str(subset), "--out",
                                 str(tmp_path / "out"), "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "ucf101: layout: the recipe's subset" in result.output
    assert "train: 6 records, 48 images (6 planned)" in result.output
    producer = load_manifest(tmp_path / "out").producer
    assert producer["command"].startswith("phiv-data convert ucf101 --src ") and producer["workers"] == 1


@pytest.mark.parametrize(("arguments", "message"), [
    (["--sampling", "random"], "--sampling must be one of uniform, center"),
    (["--backend", "ffmpeg"], "--backend must be auto or one of"),
    (["--classes", "Bowling"], "--classes: Bowling not found"),
])
def test_bad_options_exit_2_with_one_line(subset: Path, tmp_path: Path, arguments: list[str],
                                          message: str) -> None:
    result = runner.invoke(app, ["convert", "ucf101", "--src", str(subset), "--out",
                                 str(tmp_path / "out"), *arguments])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_missing_source_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["convert", "ucf101", "--src", str(tmp_path / "nowhere"),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "is not a directory" in result.output


def test_fan_out_then_join_equals_one_run(subset: Path, tmp_path: Path) -> None:
    common = ["convert", "ucf101", "--src", str(subset), "--workers", "1", "--no-progress"]
    assert runner.invoke(app, [*common, "--out", str(tmp_path / "single")]).exit_code == 0
    for index in range(3):
        result = runner.invoke(app, [*common, "--out", str(tmp_path / f"part{index}"),
                                     "--num-shards", "3", "--shard-index", str(index)])
        assert result.exit_code == 0, result.output
        assert f"(part {index + 1} of 3)" in result.output
    result = runner.invoke(app, ["join", *(str(tmp_path / f"part{i}") for i in range(3)),
                                 "--out", str(tmp_path / "joined")])
    assert result.exit_code == 0, result.output
    assert tree_bytes(tmp_path / "joined") == tree_bytes(tmp_path / "single")
    joined, single = load_manifest(tmp_path / "joined"), load_manifest(tmp_path / "single")
    assert joined.report == single.report
    assert [shard.sha256 for shard in joined.shards] == [shard.sha256 for shard in single.shards]
    # hard links by default: no second copy of the frames
    image = next((tmp_path / "joined" / "images").rglob("*.jpg"))
    assert image.stat().st_nlink == 2


def _all_visible_images_decode(out: Path) -> int:
    count = 0
    for path in (out / "images").rglob("*"):
        if path.is_file():
            with Image.open(path) as image:
                image.load()
            count += 1
    return count


@pytest.mark.slow
def test_sigkill_at_any_moment_then_rerun_gives_identical_bytes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(18):
        write_synthetic_clip(src / "train" / f"Class{i % 3}" / f"v_Class{i % 3}_g{i:02d}_c01.avi",
                             frames=48, width=160, height=120, seed=i, audio=i % 2 == 0)
    reference = tmp_path / "reference"
    command = [sys.executable, "-m", "phiv_data", "convert", "ucf101", "--src", str(src),
               "--frames", "16", "--no-progress"]
    subprocess.run([*command, "--out", str(reference), "--workers", "1"], check=True,
                   capture_output=True)

    out = tmp_path / "out"
    journal = out / WORK_DIR / "journal.jsonl"
    for kill_after in (2, 9):  # items journaled before the kill
        process = subprocess.Popen([*command, "--out", str(out), "--workers", "2"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if journal.is_file() and journal.read_bytes().count(b"\n") >= kill_after:
                break
            time.sleep(0.005)
        assert process.poll() is None, "the conversion finished before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)  # main process, fork server and workers
        process.wait()
        assert not (out / "manifest.json").exists()
        assert not list(out.glob("*.jsonl"))  # shards appear only when complete
        assert _all_visible_images_decode(out) >= 16  # never a partial JPEG

    finished = subprocess.run([*command, "--out", str(out), "--workers", "2"],
                              capture_output=True, text=True, check=False)
    assert finished.returncode == 0, finished.stderr
    assert not (out / WORK_DIR).exists()  # temporaries and journal cleaned up
    assert tree_bytes(out) == tree_bytes(reference)
    resumed = load_manifest(out).producer["resumed_items"]
    assert 9 <= resumed < 18
    frames = [np.asarray(Image.open(path)) for path in sorted((out / "images").rglob("*.jpg"))]
    assert len(frames) == 18 * 16
