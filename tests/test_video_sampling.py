"""Frame-exact sampling: indices, every backend on every codec, frame counts, bad videos."""

from __future__ import annotations

import io
import platform
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from video_factory import (
    frame_index,
    make_damaged,
    make_garbage,
    make_truncated,
    make_video,
    set_avi_frame_count,
)

from phiv_data.errors import UsageError
from phiv_data.media import video_readers
from phiv_data.media.video import (
    BACKENDS,
    SAMPLING_METHODS,
    VideoError,
    encode_jpeg,
    resolve_backend,
    sample_indices,
    sample_video,
)


def _available() -> list[str]:
    found = []
    for name in BACKENDS:
        try:
            resolve_backend(name)
        except UsageError:
            continue
        found.append(name)
    return found


AVAILABLE = _available()


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    made = {
        "xvid": make_video(root / "xvid_mp3.avi", 37, codec="xvid"),
        "h264": make_video(root / "h264.mp4", 29, codec="h264"),
        "mjpeg": make_video(root / "mjpeg.avi", 23, codec="mjpeg"),
        "three": make_video(root / "three.avi", 3, codec="xvid", audio=False),
        "header_999": make_video(root / "header_999.avi", 40, codec="xvid", audio=False),
        "header_0": make_video(root / "header_0.avi", 40, codec="xvid", audio=False),
        "garbage": make_garbage(root / "garbage.avi"),
    }
    set_avi_frame_count(made["header_999"], 999)
    set_avi_frame_count(made["header_0"], 0)
    long_clip = make_video(root / "long.avi", 120, codec="xvid")
    made["truncated"] = make_truncated(long_clip, root / "truncated.avi", 0.5)
    made["truncated_mp4"] = make_truncated(made["h264"], root / "truncated.mp4", 0.7)
    made["damaged_h264"] = make_damaged(make_video(root / "h264_40.mp4", 40, codec="h264"),
                                        root / "damaged.mp4")
    (root / "empty.avi").write_bytes(b"")
    made["empty"] = root / "empty.avi"
    return made


@pytest.mark.parametrize("frames", [1, 3, 8, 16])
@pytest.mark.parametrize("count", [1, 3, 7, 8, 9, 131, 250])
def test_uniform_is_the_recipe_formula_and_center_is_segment_middles(count: int, frames: int
                                                                    ) -> None:
    uniform = sample_indices(count, frames, "uniform")
    assert uniform == [int(k * count / frames) for k in range(frames)]
    center = sample_indices(count, frames, "center")
    for k, index in enumerate(center):
        start, end = k * count / frames, (k + 1) * count / frames
        assert index == int((start + end) / 2)
        assert 0 <= index < count
    assert center == sorted(center) and uniform == sorted(uniform)


def test_short_video_policy_repeats_frames_evenly() -> None:
    assert sample_indices(3, 8) == [0, 0, 0, 1, 1, 1, 2, 2]
    assert sample_indices(3, 8, "center") == [0, 0, 0, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="positive"):
        sample_indices(0, 8)
    with pytest.raises(ValueError, match="sampling must be one of"):
        sample_indices(10, 8, "random")


@pytest.mark.parametrize("codec", ["xvid", "h264", "mjpeg"])
@pytest.mark.parametrize("method", ["uniform", "center"])
def test_every_backend_returns_exactly_the_requested_frames(videos: dict[str, Path], codec: str,
                                                           method: str) -> None:
    results = {name: sample_video(videos[codec], 8, method, name) for name in AVAILABLE}
    reference = results["pyav"]
    assert reference.frame_count == {"xvid": 37, "h264": 29, "mjpeg": 23}[codec]
    assert reference.indices == sample_indices(reference.frame_count, 8, method)
    for name, sampled in results.items():
        assert [frame_index(frame) for frame in sampled.frames] == sampled.indices, name
        assert sampled.indices == reference.indices and sampled.backend == name
        for mine, theirs in zip(sampled.frames, reference.frames):
            assert mine.dtype == np.uint8 and mine.shape == (64, 64, 3)
            assert np.array_equal(mine, theirs), f"{name} pixels differ from pyav"


def test_the_video_extra_installs_every_backend() -> None:
    # decord has wheels only for x86_64 and Python < 3.13 (see pyproject's [video] extra)
    expected = ["pyav", "opencv"] + (["decord"] if platform.machine() == "x86_64"
                                     and sys.version_info < (3, 13) else [])
    assert AVAILABLE[:len(expected)] == expected


@pytest.mark.parametrize(("codec", "skips"), [("h264", True), ("mjpeg", True), ("xvid", False)])
def test_pyav_skips_to_clean_keyframes_only_where_exact(tmp_path: Path, codec: str,
                                                        skips: bool) -> None:
    # keyframe every 5 frames; H.264 with B-frames (bframes=2 in the factory)
    path = make_video(tmp_path / f"gop5.{'mp4' if codec == 'h264' else 'avi'}", 97,
                      codec=codec, keyframe_interval=5, audio=False)
    for method in SAMPLING_METHODS:
        wanted = sorted(set(sample_indices(97, 8, method)))
        video = video_readers.PyAVVideo(path)
        try:
            assert video.probe.count_trusted
            frames = video.read(wanted)
            assert [frame_index(frames[index]) for index in wanted] == wanted
            assert (video.frames_decoded < wanted[-1] + 1) is skips, video.frames_decoded
            video.frames_decoded = 0
            whole = video._read_runs(wanted, [(0, wanted[-1])])  # decoding from the start
            assert video.frames_decoded == wanted[-1] + 1
            assert all(np.array_equal(frames[index], whole[index]) for index in wanted)
        finally:
            video.close()


def test_unexpected_frame_after_a_skip_falls_back_to_decoding_from_the_start(
        tmp_path: Path) -> None:
    path = make_video(tmp_path / "gop5.mp4", 60, codec="h264", keyframe_interval=5)
    video = video_readers.PyAVVideo(path)
    try:
        assert video._presentation_pts is not None
        video._presentation_pts = [pts + 1 for pts in video._presentation_pts]
        frames = video.read([0, 30, 55])
        assert [frame_index(frames[index]) for index in (0, 30, 55)] == [0, 30, 55]
        assert video.frames_decoded > 56  # the skipping pass stopped, then 0..55 again
    finally:
        video.close()


def test_trusted_container_count_and_provenance(videos: dict[str, Path]) -> None:
    sampled = sample_video(videos["xvid"], 8)
    assert sampled.frame_count_source == "container"
    assert sampled.probe.container_frame_count == 37 and sampled.probe.fps == 25.0
    assert sampled.timestamps == [round(index / 25, 6) for index in sampled.indices]
    assert sampled.notes == [] and sampled.backend_version


@pytest.mark.parametrize("name", ["header_999", "header_0"])
def test_wrong_container_count_is_replaced_by_counting(videos: dict[str, Path], name: str
                                                      ) -> None:
    for backend in AVAILABLE:
        sampled = sample_video(videos[name], 8, backend=backend)
        assert sampled.frame_count == 40 and sampled.frame_count_source == "counted"
        assert sampled.indices == [0, 5, 10, 15, 20, 25, 30, 35]
        assert [frame_index(frame) for frame in sampled.frames] == sampled.indices
        assert any("40 decoded" in note for note in sampled.notes)
        if sampled.backend != backend:  # decord refuses a zero frame count: PyAV reads it
            assert (backend, name) == ("decord", "header_0")
            assert sampled.backend == "pyav" and "read with pyav" in sampled.notes[0]


def test_stream_ending_before_the_promised_count_is_resampled(videos: dict[str, Path]) -> None:
    for backend in AVAILABLE:
        sampled = sample_video(videos["xvid"], 4, backend=backend, frame_count=100)
        assert sampled.frame_count == 37 and sampled.frame_count_source == "counted"
        assert [frame_index(frame) for frame in sampled.frames] == sample_indices(37, 4)
        assert "stream ends after 37" in sampled.notes[0]


def test_three_frame_video_repeats_frames(videos: dict[str, Path]) -> None:
    for backend in AVAILABLE:
        sampled = sample_video(videos["three"], 8, backend=backend)
        assert [frame_index(frame) for frame in sampled.frames] == [0, 0, 0, 1, 1, 1, 2, 2]
        assert sampled.notes == ["3 frames < 8: sampled frames repeat"]


@pytest.mark.parametrize(("name", "reason", "words"), [
    ("garbage", "unreadable", "not a readable video"),
    ("empty", "unreadable", "not a readable video"),
    ("truncated", "truncated", "cut short: the file has"),
    ("truncated_mp4", "truncated", "runs past the end of the file"),
    # OpenCV takes the decoder error for the end of the stream: PyAV reads it instead
    ("damaged_h264", "undecodable", "decoder failed at frame"),
])
def test_bad_videos_raise_with_a_reason(videos: dict[str, Path], name: str, reason: str,
                                        words: str) -> None:
    for backend in AVAILABLE:
        with pytest.raises(VideoError, match=words) as caught:
            sample_video(videos[name], 8, backend=backend)
        assert caught.value.reason == reason
        assert videos[name].name in str(caught.value)


def test_unknown_backend_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--backend must be auto or one of"):
        resolve_backend("ffmpeg-cli")
    assert resolve_backend("auto") == "pyav"


def test_jpeg_keeps_size_by_default_and_shrinks_to_max_side() -> None:
    frame = np.zeros((48, 64, 3), dtype=np.uint8)
    frame[:, 32:] = (200, 100, 50)
    full = Image.open(io.BytesIO(encode_jpeg(frame)))
    assert full.format == "JPEG" and full.size == (64, 48)
    small = Image.open(io.BytesIO(encode_jpeg(frame, max_side=32)))
    assert small.size == (32, 24)
    assert len(encode_jpeg(frame, quality=95)) > len(encode_jpeg(frame, quality=20))
    assert encode_jpeg(frame) == encode_jpeg(frame.copy())  # deterministic bytes


@pytest.mark.parametrize("name", ["xvid", "h264", "header_999"])
def test_long_videos_are_demuxed_again_instead_of_held_in_memory(
        videos: dict[str, Path], name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = sample_video(videos[name], 8)
    monkeypatch.setattr(video_readers, "KEEP_PACKET_BYTES", 0)
    streamed = sample_video(videos[name], 8)
    assert streamed.indices == kept.indices and streamed.frame_count == kept.frame_count
    assert all(np.array_equal(a, b) for a, b in zip(streamed.frames, kept.frames))
    assert [frame_index(frame) for frame in streamed.frames] == streamed.indices

