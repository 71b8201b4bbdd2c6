"""Frame-exact video frame sampling with PyAV, OpenCV or decord.

Frame ``i`` is the i-th frame the decoder outputs in presentation order, counting from 0;
all three backends number frames the same way and return the same RGB pixels for the
same index (tested with videos whose frames encode their own index).

How a video is read (:func:`sample_video`):

1. **Probe** (PyAV, no decoding): the container's frame count ``C`` and frame rate, and a
   scan of every video packet (cheap: demuxing only).
2. **Frame count** ``T``: ``C`` when it is trustworthy: non-zero, equal to the number of
   non-empty video packets, and no packet so small that it might be a "not coded" frame
   that decoders drop (< 16 bytes). Otherwise the frames are counted by decoding them
   (``frame_count_source = "counted"``). If decoding ends before a frame the count
   promised, the frames are counted and sampled again.
3. **Indices**: ``uniform`` is the recipe's ``floor(k*T/N)``; ``center`` is the middle frame
   of N equal segments, ``floor((2k+1)*T/(2N))``. A video with fewer than N frames keeps
   N samples whose indices repeat (the same formulas, which give non-decreasing indices
   using every frame, e.g. T=3, N=8 -> 0 0 0 1 1 1 2 2).
4. **Decoding**: sequential from the first frame, stopping after the last sampled frame,
   converting only the sampled frames to RGB, single-threaded (parallelism comes from
   converting several videos at once). UCF-101's XviD clips have one keyframe per 250
   frames, so seeking would re-decode from the start anyway.

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

    @property
    def count_trusted(self) -> bool:
        """Whether the container's frame count can be used without decoding."""
        return (self.container_frame_count > 0 and self.container_frame_count == self.packets
                and self.smallest_packet >= SMALLEST_CODED_PACKET)


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


class _Ended(Exception):
    """The stream ended after ``decoded`` frames, before a requested index."""

    def __init__(self, decoded: int) -> None:
        super().__init__(decoded)
        self.decoded = decoded


def declared_size_problem(path: Path) -> str | None:
    """Why a file is shorter than its own container header says (AVI, MP4/MOV), if it is.

    A download cut at a packet boundary still demuxes cleanly; the RIFF size of an AVI or
    a top-level MP4 box running past the end of the file gives it away.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(12)
        if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
            declared = int.from_bytes(head[4:8], "little") + 8
            if declared > size:
                return f"the file has {size} bytes, its RIFF header declares {declared}"
            return None
        if head[4:8] not in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
            return None
        offset = 0
        while offset + 8 <= size:
            handle.seek(offset)
            header = handle.read(16)
            box = int.from_bytes(header[:4], "big")
            if box == 1 and len(header) == 16:
                box = int.from_bytes(header[8:16], "big")
            if box == 0:  # runs to the end of the file by definition
                return None
            if box < 8 or offset + box > size:
                return (f"box {header[4:8].decode('latin-1')!r} at byte {offset} runs past the "
                        f"end of the file ({size} bytes)")
            offset += box
    return None


def _ffmpeg_failure(error: Exception, path: Path, where: str) -> VideoError:
    return VideoError("undecodable", f"decoder failed at {where}: {_why(error)}", path)


class PyAVVideo:
    """An open video read with PyAV (also the probe for every backend)."""

    def __init__(self, path: Path) -> None:
        import av

        self.path = path
        try:
            problem = declared_size_problem(path)
        except OSError as error:
            raise VideoError("unreadable", _why(error), path) from None
        if problem is not None:
            raise VideoError("truncated", f"cut short: {problem}", path)
        try:
            self.container = av.open(str(path), metadata_errors="ignore")
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
            raise VideoError("unreadable", f"not a readable video: {_why(error)}",
                             path) from None
        try:
            if not self.container.streams.video:
                raise VideoError("unreadable", "no video stream", path)
            self.stream = self.container.streams.video[0]
            self.stream.thread_count = 1
            self.packets: list[Any] = []
            try:
                for packet in self.container.demux(self.stream):
                    if packet.size == 0:
                        continue
                    if packet.is_corrupt:
                        raise VideoError("truncated", f"packet {len(self.packets)} is cut "
                                         "short or damaged (incomplete file?)", path)
                    self.packets.append(packet)
            except av.error.FFmpegError as error:
                raise VideoError("truncated", f"read failed after {len(self.packets)} "
                                 f"packets: {_why(error)}", path) from None
            context = self.stream.codec_context
            rate = self.stream.average_rate or self.stream.guessed_rate
            self.probe = VideoProbe(
                codec=context.name, width=context.width, height=context.height,
                fps=float(rate) if rate else None,
                container_frame_count=max(int(self.stream.frames or 0), 0),
                packets=len(self.packets),
                smallest_packet=min((packet.size for packet in self.packets), default=0))
        except BaseException:
            self.container.close()
            raise

    def _decoded(self) -> Any:
        import av

        decoded = 0
        self.stream.codec_context.flush_buffers()  # restart cleanly after an earlier pass
        try:
            for packet in [*self.packets, None]:
                for frame in self.stream.codec_context.decode(packet):
                    yield frame
                    decoded += 1
        except av.error.FFmpegError as error:
            raise _ffmpeg_failure(error, self.path, f"frame {decoded}") from None

    def count_frames(self) -> int:
        return sum(1 for _ in self._decoded())

    def read(self, wanted: list[int]) -> dict[int, np.ndarray]:
        wanted_set, last, frames = set(wanted), wanted[-1], {}
        index = -1
        for index, frame in enumerate(self._decoded()):
            if index in wanted_set:
                frames[index] = frame.to_ndarray(format="rgb24")
            if index == last:
                return frames
        raise _Ended(index + 1)

    def close(self) -> None:
        self.container.close()


class OpenCVVideo:
    """An open video read with OpenCV's FFmpeg backend (grab every frame, retrieve and
    convert only the sampled ones)."""

    def __init__(self, path: Path, probe: VideoProbe) -> None:
        self.path, self.probe = path, probe

    def _capture(self) -> Any:
        import cv2

        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        if not capture.isOpened():
            raise VideoError("unreadable", "OpenCV cannot open it", self.path)
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)  # like the other backends
        return capture

    def count_frames(self) -> int:
        capture, count = self._capture(), 0
        while capture.grab():
            count += 1
        capture.release()
        return count

    def read(self, wanted: list[int]) -> dict[int, np.ndarray]:
        import cv2

        capture, wanted_set, frames = self._capture(), set(wanted), {}
        try:
            for index in range(wanted[-1] + 1):
                if not capture.grab():
                    raise _Ended(index)
                if index in wanted_set:
                    ok, bgr = capture.retrieve()
                    if not ok:
                        raise VideoError("undecodable", f"frame {index} cannot be retrieved",
                                         self.path)
                    frames[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            return frames
        finally:
            capture.release()

    def close(self) -> None:
        pass


class DecordVideo:
    """An open video read with decord (its own frame index, batch decoding)."""

    def __init__(self, path: Path, probe: VideoProbe) -> None:
        import decord

        self.path, self.probe = path, probe
        try:
            self.reader = decord.VideoReader(str(path), num_threads=1)
        except (RuntimeError, decord.DECORDError) as error:
            raise VideoError("unreadable", "decord cannot open it: "
                             f"{str(error).splitlines()[0][:200]}", path) from None

    def count_frames(self) -> int:
        return len(self.reader)

    def read(self, wanted: list[int]) -> dict[int, np.ndarray]:
        import decord

        if wanted[-1] >= len(self.reader):
            raise _Ended(len(self.reader))
        try:
            batch = self.reader.get_batch(wanted).asnumpy()
        except (RuntimeError, decord.DECORDError) as error:
            raise _ffmpeg_failure(error, self.path, f"frames {wanted}") from None
        return {index: np.ascontiguousarray(frame) for index, frame in zip(wanted, batch)}

    def close(self) -> None:
        del self.reader


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
        if frame_count is None:
            if probe.count_trusted:
                frame_count = probe.container_frame_count
            else:
                frame_count, source = video.count_frames(), "counted"
                if probe.container_frame_count != frame_count:
                    notes.append(f"container says {probe.container_frame_count} frames, "
                                 f"{frame_count} decoded: used {frame_count}")
        if frame_count <= 0:
            raise VideoError("empty", "no video frame", path)
        for _attempt in range(2):
            indices = sample_indices(frame_count, frames, method)
            wanted = sorted(set(indices))
            try:
                decoded = video.read(wanted)
                break
            except _Ended as ended:
                if ended.decoded == 0:
                    raise VideoError("empty", "no decodable frame", path) from None
                notes.append(f"container says {frame_count} frames, stream ends after "
                             f"{ended.decoded}: used {ended.decoded}")
                frame_count, source = ended.decoded, "counted"
        else:  # pragma: no cover - the second attempt uses the decoded count
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
