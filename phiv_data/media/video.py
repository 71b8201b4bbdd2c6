"""Frame-exact video frame sampling with PyAV, OpenCV or decord.

Frame ``i`` is the i-th frame the decoder outputs in presentation order, counting from 0;
all three backends number frames the same way and return the same RGB pixels for the
same index (tested with videos whose frames encode their own index).

How a video is read (:func:`sample_video`):

1. **Probe** (PyAV, no decoding): the container's frame count ``C`` and frame rate, and a
   scan of every video packet (cheap: demuxing only).
2. **Frame count** ``T``: ``C`` when it is trustworthy: non-zero, equal to the number of
   non-empty video packets, and (except for H.264, HEVC and intra-only codecs, which
   decode every packet to a frame) no packet so small that it might be a "not coded" frame
   that decoders drop (< 16 bytes, e.g. XviD's). Otherwise the frames are counted by decoding them
   (``frame_count_source = "counted"``). If decoding ends before a frame the count
   promised, the frames are counted and sampled again.
3. **Indices**: ``uniform`` is the recipe's ``floor(k*T/N)``; ``center`` is the middle frame
   of N equal segments, ``floor((2k+1)*T/(2N))``. A video with fewer than N frames keeps
   N samples whose indices repeat (the same formulas, which give non-decreasing indices
   using every frame, e.g. T=3, N=8 -> 0 0 0 1 1 1 2 2).
4. **Decoding**: from the first frame, stopping after the last sampled frame, converting
   only the sampled frames to RGB, single-threaded (parallelism comes from converting
   several videos at once). PyAV skips ahead to a later keyframe where that is exact: an
   intra-only codec (MJPEG) or an H.264/HEVC IDR picture, in a stream with a trusted
   count; every frame decoded after a skip must carry the expected timestamp, else the
   video is decoded from the start. MPEG-4 Part 2 (XviD) keyframes are not used: B-frames
   after them may refer to the previous group. UCF-101's XviD clips have one keyframe per
   250 frames anyway, so seeking there would re-decode from the start. OpenCV grabs
   every frame up to the last sampled one; decord seeks by its own frame index.

Problems raise :class:`VideoError` with a stable ``reason``: ``unreadable`` (not a video
file or no video stream), ``empty`` (no frame), ``truncated`` (the last packet is cut or
reading fails midway), ``undecodable`` (the decoder fails).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from phiv_data.errors import Location, MediaError, UsageError, display_path

SAMPLING_METHODS = ("uniform", "center")
BACKENDS = ("pyav", "opencv", "decord")
SMALLEST_CODED_PACKET = 16
"""Packets below this size may be "not coded" frames that decoders skip: the container's
frame count is then verified by decoding."""


class VideoError(MediaError):
    """A video that cannot be sampled; ``reason`` is a short stable code."""

    def __init__(self, reason: str, message: str, path: Path | None = None) -> None:
        super().__init__(message, location=Location(display_path(path)) if path else None)
        self.reason = reason


def _why(error: Exception) -> str:
    """An FFmpeg or OS error's own words, without errno and file name."""
    return str(getattr(error, "strerror", None) or error)


def sample_indices(frame_count: int, frames: int, method: str = "uniform") -> list[int]:
    """The frame indices to sample.

    Args:
        frame_count: frames in the video (T > 0).
        frames: how many to sample (N > 0).
        method: ``uniform`` (``floor(k*T/N)``, the recipe's) or ``center``
            (``floor((2k+1)*T/(2N))``, the middle of N equal segments).

    Returns:
        N non-decreasing indices in ``0..T-1`` (repeating when T < N).

    Raises:
        ValueError: on a non-positive count or an unknown method.
    """
    if frame_count <= 0 or frames <= 0:
        raise ValueError(f"need positive frame counts, got T={frame_count}, N={frames}")
    if method == "uniform":
        return [k * frame_count // frames for k in range(frames)]
    if method == "center":
        return [(2 * k + 1) * frame_count // (2 * frames) for k in range(frames)]
    raise ValueError(f"sampling must be one of {', '.join(SAMPLING_METHODS)}, not {method!r}")


@dataclass(frozen=True)
class VideoProbe:
    """What the container says about a video, and what its packets say."""

    codec: str
    width: int
    height: int
    fps: float | None
    container_frame_count: int
    packets: int
    smallest_packet: int
    every_packet_a_frame: bool = False
    """The codec never drops a packet as "not coded" (H.264, HEVC, intra-only codecs), so
    a small packet still counts as a frame."""

    @property
    def count_trusted(self) -> bool:
        """Whether the container's frame count can be used without decoding."""
        return (self.container_frame_count > 0 and self.container_frame_count == self.packets
                and (self.every_packet_a_frame
                     or self.smallest_packet >= SMALLEST_CODED_PACKET))


@dataclass(frozen=True)
class SampledVideo:
    """Sampled RGB frames and where they came from."""

    indices: list[int]
    frames: list[np.ndarray]
    """One uint8 RGB array (height x width x 3) per index, in index order."""
    frame_count: int
    frame_count_source: Literal["container", "counted"]
    probe: VideoProbe
    backend: str
    backend_version: str
    notes: list[str] = field(default_factory=list)

    @property
    def timestamps(self) -> list[float] | None:
        """Nominal time of each sampled frame in seconds (index / fps), if fps is known."""
        fps = self.probe.fps
        return [round(index / fps, 6) for index in self.indices] if fps else None


@cache
def backend_version(name: str) -> str:
    """The installed version of a backend's library (for provenance in ``meta``)."""
    from importlib.metadata import PackageNotFoundError, version

    package = {"pyav": "av", "opencv": "cv2", "decord": "decord"}[name]
    module = __import__(package)
    found = getattr(module, "__version__", None)
    if found:
        return str(found)
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def resolve_backend(name: str = "auto") -> str:
    """Check a backend is installed; ``auto`` picks PyAV (the probe needs it anyway).

    Raises:
        UsageError: an unknown name or a library that is not installed.
    """
    if name == "auto":
        name = "pyav"
    if name not in BACKENDS:
        raise UsageError(f"--backend must be auto or one of {', '.join(BACKENDS)}, not {name!r}")
    package = {"pyav": "av", "opencv": "cv2", "decord": "decord"}[name]
    try:
        __import__(package)
    except ImportError:
        pip_name = {"pyav": "av", "opencv": "opencv-python-headless", "decord": "decord"}[name]
        raise UsageError(f"video backend {name} is not installed",
                         hint=f'pip install "phiv[video]" (or {pip_name})') from None
    return name


def sample_video(path: str | Path, frames: int = 8, method: str = "uniform",
                 backend: str = "pyav", *, frame_count: int | None = None) -> SampledVideo:
    """Sample ``frames`` RGB frames from a video, exactly (see the module docstring).

    Args:
        path: the video file.
        frames: how many frames to sample (N).
        method: ``uniform`` or ``center``.
        backend: ``pyav``, ``opencv`` or ``decord`` (see :func:`resolve_backend`).
        frame_count: use this T instead of the container's or a counted one.

    Returns:
        The frames with their indices, frame count and provenance.

    Raises:
        VideoError: unreadable, empty, truncated or undecodable video.
    """
    from phiv_data.media.video_readers import DecordVideo, OpenCVVideo, PyAVVideo, VideoEnded

    path = Path(path)
    backend = resolve_backend(backend)
    probed = PyAVVideo(path)
    video: Any = probed
    notes: list[str] = []
    try:
        if backend != "pyav":
            try:
                video = (OpenCVVideo if backend == "opencv" else DecordVideo)(path, probed.probe)
            except VideoError as error:  # e.g. decord refuses a header it finds broken
                notes.append(f"{backend} cannot read it ({error.message}): read with pyav")
                backend = "pyav"
        probe: VideoProbe = probed.probe
        source: Literal["container", "counted"] = "container"
        count_given = frame_count is not None
        if frame_count is None:
            if probe.count_trusted:
                frame_count = probe.container_frame_count
            else:
                # counted by PyAV whatever the backend: it reports decoder errors, which
                # OpenCV would take for the end of the stream
                frame_count, source = probed.count_frames(), "counted"
                if probe.container_frame_count != frame_count:
                    notes.append(f"container says {probe.container_frame_count} frames, "
                                 f"{frame_count} decoded: used {frame_count}")
        if frame_count <= 0:
            raise VideoError("empty", "no video frame", path)
        for _attempt in range(3):
            indices = sample_indices(frame_count, frames, method)
            wanted = sorted(set(indices))
            try:
                decoded = video.read(wanted)
                break
            except VideoEnded as ended:
                if backend == "opencv" and not count_given:
                    # OpenCV reports a decoder error as the end of the stream; the
                    # container's or PyAV's count says it is not: PyAV names the error
                    notes.append(f"opencv stopped after {ended.decoded} of {frame_count} "
                                 "frames: read with pyav")
                    video.close()
                    video, backend = probed, "pyav"
                    continue
                if ended.decoded == 0:
                    raise VideoError("empty", "no decodable frame", path) from None
                notes.append(f"container says {frame_count} frames, stream ends after "
                             f"{ended.decoded}: used {ended.decoded}")
                frame_count, source = ended.decoded, "counted"
        else:  # pragma: no cover - the last attempt uses the decoded count
            raise VideoError("undecodable", "frame count keeps changing", path)
        if frames > frame_count:
            notes.append(f"{frame_count} frames < {frames}: sampled frames repeat")
        return SampledVideo(indices=indices, frames=[decoded[index] for index in indices],
                            frame_count=frame_count, frame_count_source=source, probe=probe,
                            backend=backend, backend_version=backend_version(backend),
                            notes=notes)
    finally:
        video.close()
        if video is not probed:
            probed.close()


def encode_jpeg(frame: np.ndarray, *, quality: int = 75, max_side: int | None = None) -> bytes:
    """Encode an RGB frame as JPEG with Pillow (quality 75 is Pillow's and the recipe's
    default), optionally shrunk so that its longer side is at most ``max_side``."""
    from PIL import Image

    image = Image.fromarray(frame, "RGB")
    if max_side is not None and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
