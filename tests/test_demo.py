"""``phiv-data demo``: builds synthetic UCF-101-style videos, converts and validates them."""

from __future__ import annotations

from pathlib import Path

import av
from typer.testing import CliRunner

from phiv_data.cli import app
from phiv_data.demo import DEMO_CLASSES, DEMO_SPLITS, build_demo_tree, run_demo
from phiv_data.shards import load_manifest, read_records, verify_dataset


def test_demo_tree_looks_like_ucf101(tmp_path: Path) -> None:
    root, count = build_demo_tree(tmp_path / "UCF101_subset")
    assert count == len(DEMO_CLASSES) * sum(len(groups) for groups in DEMO_SPLITS.values())
    clip = root / "train" / "HandstandPushups" / "v_HandStandPushups_g08_c01.avi"
    with av.open(str(clip)) as container:
        assert [stream.type for stream in container.streams] == ["video", "audio"]
        video = container.streams.video[0]
        assert video.codec_context.name == "mpeg4" and video.codec_context.codec_tag == "XVID"
        assert (video.width, video.height) == (160, 120) and video.frames > 8


def test_demo_converts_validates_and_says_where(tmp_path: Path) -> None:
    lines: list[str] = []
    dataset = run_demo(tmp_path / "demo", workers=1, echo=lines.append)
    assert dataset == tmp_path / "demo" / "ucf101"
    text = "\n".join(lines)
    assert "validate --check-images decode: passed" in text and "0 errors" in text
    assert f"result: {dataset} (ucf101_{{train,val,test}}.jsonl" in text
    _, manifest = verify_dataset(dataset)  # the trainer's gate: validated, unchanged
    assert [shard.split for shard in manifest.shards] == ["train", "val", "test"]
    assert all(shard.validation and shard.validation.passed for shard in manifest.shards)
    from phiv_train.data import RecordIndex, resolve_sources  # what phiv-train --data reads

    index = RecordIndex(resolve_sources([dataset], split="train"))
    record, source, _ = index.read(0)
    assert len(index) == 9 and (source.images_root / record.images[0]).is_file()
    train = [record for _, record in read_records(dataset / "ucf101_train.jsonl")]
    assert len(train) == 9 and len(train[0].images) == 8
    assert {record.conversations[0].assistant for record in train} == set(DEMO_CLASSES)

    before = {path: path.read_bytes() for path in dataset.rglob("*.j*")}
    again: list[str] = []
    run_demo(tmp_path / "demo", workers=1, echo=again.append)  # reuses everything
    assert {path: path.read_bytes() for path in dataset.rglob("*.j*")} == before
    assert load_manifest(dataset).shards[0].validation.passed


def test_demo_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "demo: 15 synthetic UCF-101-style videos" in result.output
    assert "train: 9 records, 72 images (9 planned)" in result.output
    assert f"result: {tmp_path / 'd' / 'ucf101'}" in result.output
