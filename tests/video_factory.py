"""Videos made in code whose frames encode their own index, for frame-exact tests.

Each frame shows its index as 12 bits in a 4x3 grid of black/white blocks over the top of
the frame, and a red band at the bottom (to catch RGB/BGR mix-ups). The blocks survive
lossy codecs, so :func:`frame_index` reads the index back from any decoded RGB frame.

:func:`make_video` writes MPEG-4 Part 2 (XviD) in AVI with an MP3 audio track like the
real UCF-101 clips, H.264 in MP4 (with B-frames, so presentation and decoding order
differ), or MJPEG in AVI. :func:`make_truncated`, :func:`make_garbage` and
:func:`set_avi_frame_count` damage files in the ways real collections are damaged.
"""

from __future__ import annotations

import os
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np

BITS = 12
COLUMNS, ROWS = 4, 3

CODECS = {
    # name: (container format, codec, pixel format, codec tag)
    "xvid": ("avi", "mpeg4", "yuv420p", "XVID"),
    "h264": ("mp4", "libx264", "yuv420p", None),
    "mjpeg": ("avi", "mjpeg", "yuvj420p", None),
}


def frame_picture(index: int, width: int = 64, height: int = 64) -> np.ndarray:
    """The RGB frame (uint8, height x width x 3) that encodes ``index``."""
    picture = np.full((height, width, 3), 128, dtype=np.uint8)
    band = height // 4
    block_w, block_h = width // COLUMNS, (height - band) // ROWS
    for bit in range(BITS):
        row, column = divmod(bit, COLUMNS)
        value = 235 if index >> bit & 1 else 20
        picture[row * block_h:(row + 1) * block_h, column * block_w:(column + 1) * block_w] = value
    picture[height - band:, :] = (220, 30, 30)
    return picture


def frame_index(picture: np.ndarray) -> int:
    """Read back the index encoded by :func:`frame_picture` from a decoded RGB frame.

    Raises:
        AssertionError: when the red band is not red (channels swapped).
    """
    height, width = picture.shape[:2]
    band = height // 4
    block_w, block_h = width // COLUMNS, (height - band) // ROWS
    red = picture[height - band + 2:, 2:-2].reshape(-1, 3).mean(axis=0)
    assert red[0] > 150 and red[2] < 100, f"bottom band is not red: {red} (BGR?)"
    index = 0
    for bit in range(BITS):
        row, column = divmod(bit, COLUMNS)
        block = picture[row * block_h + 2:(row + 1) * block_h - 2,
                        column * block_w + 2:(column + 1) * block_w - 2]
        if block.mean() > 128:
            index |= 1 << bit
    return index


def make_video(path: str | Path, frames: int, *, codec: str = "xvid", fps: int = 25,
               width: int = 64, height: int = 64, audio: bool | None = None,
               keyframe_interval: int = 250, pictures: list[np.ndarray] | None = None) -> Path:
    """Write a video of ``frames`` index-encoding frames (or the given ``pictures``).

    Args:
        path: destination (parent directories are created).
        frames: number of frames.
        codec: ``xvid`` (AVI), ``h264`` (MP4) or ``mjpeg`` (AVI).
        fps: frame rate.
        width, height: frame size (even numbers).
        audio: add an MP3 track; default: for ``xvid``, like real UCF-101 clips.
        keyframe_interval: GOP size (UCF-101's XviD clips use 250).
        pictures: explicit RGB frames instead of the index pictures.

    Returns:
        The path.
    """
    import av

    container_format, codec_name, pixel_format, tag = CODECS[codec]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec_name, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        stream.codec_context.gop_size = keyframe_interval
        if tag:
            stream.codec_tag = tag
        if codec == "h264":
            stream.options = {"preset": "ultrafast", "x264-params": "bframes=2:threads=1"}
        elif codec == "xvid":
            stream.codec_context.bit_rate = 400_000
            stream.codec_context.qmin, stream.codec_context.qmax = 2, 8
        audio_stream = None
        if audio if audio is not None else codec == "xvid":
            audio_stream = container.add_stream("libmp3lame", rate=22050)
            audio_stream.layout = "mono"
        samples_sent = 0
        audio_shift: list[int] = []

        def mux_audio(packet: av.Packet) -> None:
            # The MP3 encoder's priming gives negative timestamps; shifting the whole file
            # would leave a hole in the video track, so start the audio at zero instead.
            if packet.pts is None:
                return
            if not audio_shift:
                audio_shift.append(-min(packet.pts, 0))
            packet.pts += audio_shift[0]
            packet.dts = packet.pts
            container.mux(packet)

        for index in range(frames):
            picture = pictures[index] if pictures is not None else frame_picture(index, width, height)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
            if audio_stream is not None:
                wanted = (index + 1) * 22050 // fps
                while samples_sent + 1152 <= wanted:
                    tone = (np.sin(np.arange(samples_sent, samples_sent + 1152) / 20.0) * 3000)
                    chunk = av.AudioFrame.from_ndarray(tone.astype(np.int16)[None, :],
                                                       format="s16", layout="mono")
                    chunk.sample_rate, chunk.pts = 22050, samples_sent
                    chunk.time_base = Fraction(1, 22050)
                    for packet in audio_stream.encode(chunk):
                        mux_audio(packet)
                    samples_sent += 1152
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            for packet in audio_stream.encode():
                mux_audio(packet)
    return path


def make_truncated(source: str | Path, path: str | Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of a video's bytes (a download cut short)."""
    data = Path(source).read_bytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def make_garbage(path: str | Path, size: int = 4096, seed: int = 0) -> Path:
    """A file with a video name and random bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def make_damaged(source: str | Path, path: str | Path, at: float = 0.3, size: int = 400,
                 seed: int = 1) -> Path:
    """A copy of ``source`` with ``size`` random bytes written over it at fraction ``at``
    (same length: the container still opens; the decoder meets garbage)."""
    data = bytearray(Path(source).read_bytes())
    start = int(len(data) * at)
    data[start:start + size] = np.random.default_rng(seed).integers(
        0, 256, size, dtype=np.uint8).tobytes()
    Path(path).write_bytes(bytes(data))
    return Path(path)


def set_avi_frame_count(path: str | Path, count: int) -> None:
    """Overwrite an AVI's frame counts (``avih`` total frames and the video ``strh``
    length) in place, leaving the data intact: a container that lies about its length."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    avih = data.find(b"avih")
    struct.pack_into("<I", data, avih + 8 + 16, count)
    position = 0
    while (position := data.find(b"strh", position + 1)) != -1:
        if data[position + 8:position + 12] == b"vids":
            struct.pack_into("<I", data, position + 8 + 32, count)
    with open(path, "r+b") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


SPELLING = {"HandstandPushups": "HandStandPushups"}
"""Folder name -> file-name spelling, where the real dataset differs."""


def clip_name(class_name: str, group: int, clip: int = 1, extension: str = ".avi") -> str:
    """``v_<Class>_gGG_cCC.avi`` with the real dataset's spelling quirks."""
    return f"v_{SPELLING.get(class_name, class_name)}_g{group:02d}_c{clip:02d}{extension}"


def make_subset_tree(root: str | Path, classes: tuple[str, ...] = ("ApplyEyeMakeup",
                     "HandstandPushups"), per_split: dict[str, int] | None = None,
                     frames: int = 12, codec: str = "xvid") -> Path:
    """The recipe's subset layout: ``root/{split}/<Class>/v_<Class>_gGG_c01.avi``; clip i
    of a split has ``frames + i`` frames (so videos differ)."""
    root = Path(root)
    per_split = per_split or {"train": 2, "val": 1, "test": 1}
    first_group = {"train": 8, "val": 20, "test": 1}
    for split, count in per_split.items():
        for class_name in classes:
            for i in range(count):
                make_video(root / split / class_name / clip_name(class_name, first_group[split] + i),
                           frames + i, codec=codec, audio=False)
    return root


def make_official_tree(root: str | Path, classes: tuple[str, ...] = ("ApplyEyeMakeup",
                       "BabyCrawling", "HandstandPushups"), groups: range = range(1, 7),
                       test_groups: tuple[int, ...] = (1, 2), frames: int = 10,
                       extra_classes: tuple[str, ...] = ("Archery",),
                       missing: str | None = "BabyCrawling/v_BabyCrawling_g06_c02.avi") -> Path:
    """The official release's layout: ``root/UCF-101/<Class>/*.avi`` and
    ``root/ucfTrainTestlist/`` (classInd.txt and fold 1 lists, CRLF). The lists name
    HandstandPushups clips with the folder's spelling while the files use the real
    ``HandStandPushups`` one, ``extra_classes`` are in classInd.txt without videos, and
    ``missing`` is listed but absent."""
    root = Path(root)
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    all_classes = sorted(classes + extra_classes)
    (lists / "classInd.txt").write_bytes("".join(
        f"{i} {name}\r\n" for i, name in enumerate(all_classes, start=1)).encode())
    train, test = [], []
    for class_name in classes:
        label = all_classes.index(class_name) + 1
        for group in groups:
            make_video(root / "UCF-101" / class_name / clip_name(class_name, group),
                       frames + group, codec="xvid", audio=False)
            listed = f"{class_name}/v_{class_name}_g{group:02d}_c01.avi"
            if group in test_groups:
                test.append(f"{listed}\r\n")
            else:
                train.append(f"{listed} {label}\r\n")
    if missing:
        train.append(f"{missing} {all_classes.index(missing.split('/')[0]) + 1}\r\n")
    (lists / "trainlist01.txt").write_bytes("".join(train).encode())
    (lists / "testlist01.txt").write_bytes("".join(test).encode())
    return root
