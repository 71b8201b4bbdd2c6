"""The three frame readers behind :func:`phiv_data.media.video.sample_video`.

Each reader numbers frames as the decoder outputs them in presentation order and offers
``count_frames()`` (decode everything, convert nothing) and ``read(sorted_indices)``
(decode from the start, stop after the last index, convert only those frames to RGB).
:class:`PyAVVideo` also probes the container for every backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from phiv_data.media.video import VideoError, VideoProbe, _why

KEEP_PACKET_BYTES = 64 << 20
"""Videos whose packets exceed this are demuxed twice instead of held in memory."""
CLEAN_START_NALS = {"h264": frozenset({5}), "hevc": frozenset({19, 20})}
"""NAL unit types after which no frame refers to an earlier one, and none is shown before
it that comes from earlier packets (H.264 IDR; HEVC IDR_W_RADL, IDR_N_LP)."""


class VideoEnded(Exception):
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
        import av.video.reformatter

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
            # The demuxed packets are kept for the decoding pass (no second read of the
            # file) unless the video is long: then decoding demuxes it again.
            self.packets: list[Any] | None = []
            self.keyframes: list[int] = []
            pts: list[int | None] = []
            count, smallest, kept_bytes = 0, None, 0
            try:
                for packet in self.container.demux(self.stream):
                    if packet.size == 0:
                        continue
                    if packet.is_corrupt:
                        raise VideoError("truncated", f"packet {count} is cut short or "
                                         "damaged (incomplete file?)", path)
                    if packet.is_keyframe:
                        self.keyframes.append(count)
                    pts.append(packet.pts)
                    count += 1
                    smallest = packet.size if smallest is None else min(smallest, packet.size)
                    if self.packets is not None:
                        kept_bytes += packet.size
                        self.packets.append(packet)
                        if kept_bytes > KEEP_PACKET_BYTES:
                            self.packets = None
            except av.error.FFmpegError as error:
                raise VideoError("truncated", f"read failed after {count} packets: "
                                 f"{_why(error)}", path) from None
            context = self.stream.codec_context
            rate = self.stream.average_rate or self.stream.guessed_rate
            self.probe = VideoProbe(
                codec=context.name, width=context.width, height=context.height,
                fps=float(rate) if rate else None,
                container_frame_count=max(int(self.stream.frames or 0), 0),
                packets=count, smallest_packet=smallest or 0,
                every_packet_a_frame=context.codec.intra_only or context.name in CLEAN_START_NALS)
            self.frames_decoded = 0
            """Frames decoded so far (seeking decodes fewer)."""
            self._clean: dict[int, bool] = {}
            # one converter for every frame: frame.to_ndarray(format=...) sets up a new one
            # each call, which costs more than the conversion itself (same pixels)
            self._to_rgb = av.video.reformatter.VideoReformatter()
            # frame i (presentation order) has the i-th smallest packet timestamp: checked
            # on every frame decoded after a skip
            self._presentation_pts: list[int] | None = None
            if None not in pts and len(set(pts)) == len(pts):
                self._presentation_pts = sorted(pts)  # type: ignore[type-var]
        except BaseException:
            self.container.close()
            raise

    def _clean_start(self, position: int) -> bool:
        """Whether decoding may start at packet ``position`` and number the frames it
        outputs ``position``, ``position + 1``, ... exactly as a decode from the start would.

        True only for a held, trusted stream (one frame per packet) and a keyframe of an
        intra-only codec, or an H.264/HEVC keyframe holding an IDR picture. Not for MPEG-4
        Part 2 (XviD) or other codecs, whose keyframes may be followed by B-frames that
        refer to the previous group of pictures.
        """
        if position == 0:
            return True
        if position in self._clean:
            return self._clean[position]
        self._clean[position] = clean = self._check_clean_start(position)
        return clean

    def _check_clean_start(self, position: int) -> bool:
        if (self.packets is None or not self.probe.count_trusted
                or self._presentation_pts is None):
            return False
        context = self.stream.codec_context
        if context.codec.intra_only:
            return True
        kinds = CLEAN_START_NALS.get(context.name)
        if kinds is None:
            return False
        extradata = context.extradata or b""
        length_size = None  # Annex B start codes unless the extradata is avcC/hvcC
        if extradata[:1] == b"\x01":
            length_size = (extradata[4 if context.name == "h264" else 21] & 3) + 1
        return bool(kinds & _nal_types(bytes(self.packets[position]), context.name,
                                        length_size))

    def _runs(self, wanted: list[int]) -> list[tuple[int, int]]:
        """Decoding runs ``(first packet, last index)`` covering the sorted ``wanted``: a
        new run starts at the last clean keyframe before an index when that skips frames."""
        import bisect

        runs: list[tuple[int, int]] = []
        for index in wanted:
            at = bisect.bisect_right(self.keyframes, index) - 1
            while at >= 0 and not self._clean_start(self.keyframes[at]):
                at -= 1
            start = self.keyframes[at] if at >= 0 else 0
            if runs and start <= runs[-1][1] + 1:
                runs[-1] = (runs[-1][0], index)  # going on decodes no more than restarting
            else:
                runs.append((start, index))
        return runs

    def _decoded(self, start: int = 0) -> Any:
        """Decoded frames in presentation order, from packet ``start`` (a clean start)."""
        import av

        decoded = start
        try:
            if self.packets is not None:
                context = self.stream.codec_context
                context.flush_buffers()  # restart cleanly after an earlier pass
                for packet in [*self.packets[start:], None]:
                    for frame in context.decode(packet):
                        self.frames_decoded += 1
                        yield frame
                        decoded += 1
                return
            with av.open(str(self.path), metadata_errors="ignore") as container:
                stream = container.streams.video[0]
                stream.thread_count = 1
                context = stream.codec_context
                for packet in container.demux(stream):
                    if packet.size == 0:  # not a frame (and an empty packet means "flush")
                        continue
                    for frame in context.decode(packet):
                        self.frames_decoded += 1
                        yield frame
                        decoded += 1
                for frame in context.decode(None):
                    self.frames_decoded += 1
                    yield frame
                    decoded += 1
        except av.error.FFmpegError as error:
            raise _ffmpeg_failure(error, self.path, f"frame {decoded}") from None

    def count_frames(self) -> int:
        return sum(1 for _ in self._decoded())

    def read(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Decode the frames at the sorted indices ``wanted``, skipping ahead to clean
        keyframes where that is exact (see :meth:`_clean_start`)."""
        try:
            return self._read_runs(wanted, self._runs(wanted))
        except _NotExact:  # a frame after a skip is not the one expected: no skipping
            return self._read_runs(wanted, [(0, wanted[-1])])

    def _read_runs(self, wanted: list[int], runs: list[tuple[int, int]]
                   ) -> dict[int, np.ndarray]:
        wanted_set, frames = set(wanted), {}
        expected = self._presentation_pts or []
        for start, last in runs:
            index = start - 1
            for index, frame in enumerate(self._decoded(start), start=start):
                if start and (index >= len(expected) or expected[index] != frame.pts):
                    raise _NotExact
                if index in wanted_set:
                    frames[index] = self._to_rgb.reformat(frame, format="rgb24").to_ndarray()
                if index == last:
                    break
            else:
                raise VideoEnded(index + 1)
        return frames

    def close(self) -> None:
        self.container.close()


class _NotExact(Exception):
    """Decoding after a skip gave a frame other than the expected one."""


def _nal_types(data: bytes, codec: str, length_size: int | None) -> set[int]:
    """The NAL unit types in one H.264/HEVC packet (length-prefixed or Annex B)."""
    starts: list[int] = []
    if length_size is None:
        at = data.find(b"\x00\x00\x01")
        while at >= 0:
            starts.append(at + 3)
            at = data.find(b"\x00\x00\x01", at + 3)
    else:
        at = 0
        while at + length_size < len(data):
            starts.append(at + length_size)
            at += length_size + int.from_bytes(data[at:at + length_size], "big")
    return {(data[at] & 0x1F) if codec == "h264" else (data[at] >> 1) & 0x3F
            for at in starts if at < len(data)}


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
                    raise VideoEnded(index)
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
            raise VideoEnded(len(self.reader))
        try:
            batch = self.reader.get_batch(wanted).asnumpy()
        except (RuntimeError, decord.DECORDError) as error:
            raise _ffmpeg_failure(error, self.path, f"frames {wanted}") from None
        return {index: np.ascontiguousarray(frame) for index, frame in zip(wanted, batch)}

    def close(self) -> None:
        del self.reader
