"""UCF-101 conversion: both layouts, ids, prompt, frames, meta, skips, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image
from video_factory import (
    frame_index,
    make_damaged,
    make_garbage,
    make_official_tree,
    make_subset_tree,
    make_truncated,
    make_video,
    set_avi_frame_count,
)

from phiv_data.convert import ucf101
from phiv_data.convert.framework import RunOptions
from phiv_data.convert.ucf101_layout import find_videos, group_of
from phiv_data.errors import DataError, UsageError
from phiv_data.shards import load_manifest, read_records
from phiv_data.validate import ValidationOptions, validate_paths

ONE = RunOptions(workers=1, progress=False)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file() and path.name != "manifest.json"}


def records_of(out: Path, split: str) -> list:
    return [record for _, record in read_records(out / f"ucf101_{split}.jsonl")]


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_subset_tree(tmp_path_factory.mktemp("subset") / "UCF101_subset")


@pytest.fixture(scope="module")
def converted(subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "out"
    ucf101.convert(subset, out, ucf101.Options(), ONE)
    return out


def test_subset_layout_ids_prompt_and_recipe_paths(converted: Path) -> None:
    train, val, test = (records_of(converted, split) for split in ("train", "val", "test"))
    assert [record.id for record in train] == [f"train-{i:010d}" for i in range(4)]
    assert [record.id for record in val] == ["val-0000000004", "val-0000000005"]
    assert [record.id for record in test] == ["test-0000000006", "test-0000000007"]
    first = train[0]
    assert first.source == "ucf101"
    assert first.conversations[0].user == ("Classify the video into one of the following "
                                           "classes: ApplyEyeMakeup, HandstandPushups.")
    assert first.conversations[0].images == [
        f"train/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.{k}.jpg" for k in range(8)]
    # class from the folder, not from the file name's spelling
    handstand = train[2]
    assert handstand.conversations[0].assistant == "HandstandPushups"
    assert handstand.conversations[0].images[0] == (
        "train/HandstandPushups/v_HandStandPushups_g08_c01.0.jpg")
    assert {record.conversations[0].user for record in train + val + test} == {first.conversations[0].user}
    for record in train + val + test:
        for image in record.images:
            assert (converted / "images" / image).is_file()


def test_meta_records_where_frames_came_from(converted: Path) -> None:
    record = records_of(converted, "train")[1]  # v_ApplyEyeMakeup_g09_c01: 13 frames
    meta = record.meta
    assert meta["video"] == "train/ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi"
    assert meta["frame_count"] == 13 and meta["frame_count_source"] == "container"
    assert meta["frame_indices"] == [k * 13 // 8 for k in range(8)]
    assert meta["timestamps"] == [round(i / 25, 6) for i in meta["frame_indices"]]
    assert meta["fps"] == 25.0 and meta["sampling"] == "uniform"
    assert meta["backend"] == "pyav" and meta["backend_version"]
    assert not Path(meta["video"]).is_absolute()


def test_written_frames_are_the_recorded_indices(converted: Path) -> None:
    for record in records_of(converted, "val") + records_of(converted, "test"):
        decoded = [frame_index(np.asarray(Image.open(converted / "images" / p)))
                   for p in record.images]
        assert decoded == record.meta["frame_indices"]


def test_output_validates_with_images_decoded(converted: Path) -> None:
    report = validate_paths(sorted(converted.glob("*.jsonl")),
                            ValidationOptions(check_images="decode", workers=1))
    assert report.ok, report.render_text()
    assert sum(summary.images for summary in report.files) == 8 * 8


def test_recipe_scale_ids_first_val_record_is_300(tmp_path: Path) -> None:
    classes = ["ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam",
               "BandMarching", "BaseballPitch", "Basketball", "BasketballDunk", "BenchPress"]
    for split, per_class in (("train", 30), ("val", 3), ("test", 7)):
        for class_name in classes:
            folder = tmp_path / split / class_name
            folder.mkdir(parents=True)
            for i in range(per_class):
                (folder / f"v_{class_name}_g{i + 1:02d}_c01.avi").touch()
    plan = ucf101.build_plan(tmp_path, ucf101.Options())
    ids = [item.payload.record_id for item in plan.items]
    assert ids[299] == "train-0000000299" and ids[300] == "val-0000000300"
    assert plan.items[300].key == "val:val/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
    assert ids[-1] == "test-0000000399"
    assert plan.items[0].payload.prompt == (
        "Classify the video into one of the following classes: " + ", ".join(classes) + ".")
    assert any("subset" in note for note in plan.notes)


def test_official_layout_fold_lists_groups_and_quirks(tmp_path: Path) -> None:
    src = make_official_tree(tmp_path / "src")
    layout = find_videos(src, fold=1, val_groups=1)
    assert layout.kind == "official"
    assert layout.prompt_classes == ["ApplyEyeMakeup", "Archery", "BabyCrawling",
                                     "HandstandPushups"]  # classInd.txt, sorted
    groups = {split: {group_of(entry.video) for entry in entries}
              for split, entries in layout.videos.items()}
    assert groups == {"train": {3, 4, 5}, "val": {6}, "test": {1, 2}}
    handstand = [entry for entry in layout.videos["train"] if entry.class_name == "HandstandPushups"]
    assert handstand[0].video == "UCF-101/HandstandPushups/v_HandStandPushups_g03_c01.avi"
    missing = [entry for entries in layout.videos.values() for entry in entries if entry.missing]
    assert [entry.video for entry in missing] == ["UCF-101/BabyCrawling/v_BabyCrawling_g06_c02.avi"]

    out = tmp_path / "out"
    report = ucf101.convert(src, out, ucf101.Options(val_groups=1), ONE)
    assert [(entry.reason, entry.where) for entry in report.skipped] == [
        ("missing-video", "UCF-101/BabyCrawling/v_BabyCrawling_g06_c02.avi")]
    assert report.records == {"train": 9, "val": 3, "test": 6}
    assert any("fold 1" in note for note in report.notes)
    assert any("val: groups g06" in note for note in report.notes)
    test_record = records_of(out, "test")[0]
    assert test_record.conversations[0].assistant == "ApplyEyeMakeup"  # from the folder
    assert test_record.meta["video"] == "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
    manifest = load_manifest(out)
    assert manifest.report["skipped_by_reason"] == {"missing-video": 1}


def test_official_layout_classes_filter_and_bad_lists(tmp_path: Path) -> None:
    src = make_official_tree(tmp_path / "src", classes=("ApplyEyeMakeup", "BabyCrawling"),
                             groups=range(1, 4), test_groups=(1,), missing=None)
    layout = find_videos(src, classes=("BabyCrawling",), val_groups=0)
    assert layout.prompt_classes == ["BabyCrawling"]
    assert {entry.class_name for entries in layout.videos.values() for entry in entries} == {
        "BabyCrawling"}
    assert "val" not in layout.videos
    with pytest.raises(UsageError, match="--classes: Bowling not found"):
        find_videos(src, classes=("Bowling",))
    with pytest.raises(UsageError, match="trainlist02.txt not found"):
        find_videos(src, fold=2)
    with pytest.raises(UsageError, match="--fold must be 1, 2 or 3"):
        find_videos(src, fold=4)
    lists = src / "ucfTrainTestlist" / "trainlist01.txt"
    lists.write_bytes(lists.read_bytes() + b"a b c d\r\n")
    with pytest.raises(DataError, match=r"trainlist01.txt:5: expected 'Class/video.avi'"):
        find_videos(src)


def test_unknown_layouts_are_explained(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no UCF-101 videos"):
        find_videos(tmp_path)
    make_video(tmp_path / "Archery" / "v_Archery_g01_c01.avi", 4, audio=False)
    with pytest.raises(UsageError, match="no ucfTrainTestlist/"):
        find_videos(tmp_path)
    (tmp_path / "train" / "Archery").mkdir(parents=True)
    (tmp_path / "ucfTrainTestlist").mkdir()
    with pytest.raises(UsageError, match="both split folders"):
        find_videos(tmp_path)


def test_bad_videos_are_skipped_and_reported_everywhere(tmp_path: Path) -> None:
    src = make_subset_tree(tmp_path / "src", classes=("Archery",),
                           per_split={"train": 1, "test": 1})
    make_garbage(src / "train" / "Archery" / "v_Archery_g09_c01.avi")
    make_truncated(make_video(tmp_path / "long.avi", 60, audio=False),
                   src / "train" / "Archery" / "v_Archery_g10_c01.avi")
    make_video(src / "train" / "Archery" / "v_Archery_g11_c01.avi", 3, audio=False)
    liar = make_video(src / "train" / "Archery" / "v_Archery_g12_c01.avi", 20, audio=False)
    set_avi_frame_count(liar, 999)
    make_video(src / "train" / "Archery" / "v_Archery_g12_c01.mp4", 20, codec="h264")
    make_damaged(make_video(tmp_path / "h264.mp4", 40, codec="h264"),
                 src / "train" / "Archery" / "v_Archery_g13_c01.mp4")
    out = tmp_path / "out"
    report = ucf101.convert(src, out, ucf101.Options(), ONE)
    reasons = {entry.where.split("/")[-1]: entry.reason for entry in report.skipped}
    assert reasons == {"v_Archery_g09_c01.avi": "unreadable",
                       "v_Archery_g10_c01.avi": "truncated",
                       "v_Archery_g12_c01.mp4": "duplicate-name",
                       "v_Archery_g13_c01.mp4": "undecodable"}
    changed = {entry.key.split("/")[-1]: entry.note for entry in report.changed}
    assert changed["v_Archery_g11_c01.avi"] == "3 frames < 8: sampled frames repeat"
    assert "container says 999 frames" in changed["v_Archery_g12_c01.avi"]
    manifest_report = load_manifest(out).report
    assert manifest_report["skipped_by_reason"] == {"duplicate-name": 1, "truncated": 1,
                                                    "undecodable": 1, "unreadable": 1}
    assert len(manifest_report["changed"]) == 2
    train = records_of(out, "train")
    assert [record.id for record in train] == ["train-0000000000", "train-0000000003",
                                               "train-0000000004"]  # gaps where skipped
    short = train[1]
    assert short.meta["frame_indices"] == [0, 0, 0, 1, 1, 1, 2, 2]
    assert (out / "images" / short.images[0]).read_bytes() == (
        out / "images" / short.images[2]).read_bytes()

    skip_short = ucf101.convert(src, tmp_path / "out2", ucf101.Options(short_videos="skip"), ONE)
    assert "too-short" in skip_short.skipped_by_reason()


def test_identical_bytes_for_any_worker_count_and_backend(subset: Path, converted: Path,
                                                          tmp_path: Path) -> None:
    ucf101.convert(subset, tmp_path / "two", ucf101.Options(),
                   RunOptions(workers=2, progress=False))
    assert tree_bytes(tmp_path / "two") == tree_bytes(converted)
    ucf101.convert(subset, tmp_path / "cv", ucf101.Options(backend="opencv"), ONE)
    images = {name: data for name, data in tree_bytes(converted).items() if name.endswith(".jpg")}
    assert images == {name: data for name, data in tree_bytes(tmp_path / "cv").items()
                      if name.endswith(".jpg")}
    assert records_of(tmp_path / "cv", "val")[0].meta["backend"] == "opencv"


def test_center_sampling_max_side_and_quality(subset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ucf101.convert(subset, out, ucf101.Options(frames=4, sampling="center", max_side=32,
                                               jpeg_quality=40), ONE)
    record = records_of(out, "train")[0]  # 12 frames
    assert record.meta["frame_indices"] == [1, 4, 7, 10] and len(record.images) == 4
    image = Image.open(out / "images" / record.images[0])
    assert image.size == (32, 32)
    with pytest.raises(UsageError, match="--jpeg-quality must be in 1..95"):
        ucf101.build_plan(subset, ucf101.Options(jpeg_quality=100))
    with pytest.raises(UsageError, match="single field"):
        ucf101.build_plan(subset, ucf101.Options(prompt_template="Pick one of {labels}"))


def test_prompt_template_and_classes_option(subset: Path, tmp_path: Path) -> None:
    options = ucf101.Options(classes=("HandstandPushups",), prompt_template="Which: {classes}?")
    ucf101.convert(subset, tmp_path / "out", options, ONE)
    records = records_of(tmp_path / "out", "train")
    assert [record.conversations[0].user for record in records] == ["Which: HandstandPushups?"] * 2


def test_rerun_resumes_and_finished_rerun_is_a_no_op(subset: Path, converted: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    ucf101.convert(subset, out, ucf101.Options(), ONE)
    manifest = (out / "manifest.json").read_bytes()
    ucf101.convert(subset, out, ucf101.Options(), ONE)
    assert (out / "manifest.json").read_bytes() == manifest
    with pytest.raises(UsageError, match="already holds a finished conversion"):
        ucf101.convert(subset, out, ucf101.Options(frames=4), ONE)
    producer = orjson.loads(manifest)["producer"]
    assert producer["options"]["frames"] == 8 and producer["workers"] == 1
