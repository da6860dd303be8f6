"""Sample a video at a fixed rate with PyAV: one small image per frame interval [t, t + 1/fps).

Kept inside the face package so the face backends do not depend on the rest of the ingestion code. Frames are
decoded sequentially (seeking once to the keyframe before `start`) and only the sampled ones are converted,
already scaled down by swscale, which keeps decoding a small share of the per-frame cost.
"""

from __future__ import annotations

import bisect
import math
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from ...errors import PipelineError

STAGE = "face"


@dataclass
class SampledFrames:
    """Frame intervals of one video and, per interval, the image on display at its midpoint (None past the end
    of the decodable video)."""

    start: np.ndarray  # (N,) float64 seconds from the start of the video stream
    end: np.ndarray  # (N,) float64
    images: list[np.ndarray | None]  # (H, W) uint8 grey or (H, W, 3) uint8 RGB


def frame_grid(start: float, end: float, fps: float) -> np.ndarray:
    """Interval starts start + k/fps for every k with start + k/fps < end."""
    if fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be positive, got {fps}")
    n = max(0, math.ceil((end - start) * fps - 1e-6))  # tolerate float error in end
    return start + np.arange(n, dtype=np.float64) / fps


def _target_size(width: int, height: int, max_height: int | None) -> tuple[int, int]:
    if max_height is None or height <= max_height:
        return width, height
    w = int(round(width * max_height / height / 2.0)) * 2
    return max(w, 2), max_height


def _fail(path: Path, why: str) -> PipelineError:
    return PipelineError(f"{path}: {why}", stage=STAGE, source_path=str(path))


def _open(path: Path) -> av.container.InputContainer:
    """Open the video, turning every way it can be unreadable into our error naming the file."""
    if not path.is_file():
        raise _fail(path, "video file not found")
    if path.stat().st_size == 0:
        raise _fail(path, "video file is empty (0 bytes)")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise _fail(path, f"cannot open video ({exc})") from exc


def _stream_end(container: av.container.InputContainer, stream: av.VideoStream, path: Path) -> float:
    """The video stream's duration (the container's when the stream gives none)."""
    tb = stream.time_base
    if stream.duration is not None and tb is not None:
        return float(stream.duration * tb)
    if container.duration is not None:
        return container.duration / 1e6
    raise _fail(path, "video duration unknown; pass an explicit end time")


LOOKAHEAD = 32  # packets read ahead of the decoder to learn which frame is displayed next


def _shown_frames(container: av.container.InputContainer, stream: av.VideoStream, mids: np.ndarray,
                  offset: float) -> Iterator[av.VideoFrame]:
    """The stream's frames in display order, less the non-reference frames that no interval shows.

    An interval shows the last frame displayed at or before its midpoint, so a frame displayed from t until the
    next frame's time t' is shown by no interval when no midpoint lies in [t, t'). Such a frame is left to the
    decoder to drop when it is a non-reference frame (FFmpeg's skip_frame=NONREF: nothing else is decoded from
    it, so every other frame decodes to the same pixels). t' is taken as the earliest later time among the
    packets seen so far and LOOKAHEAD ahead: never earlier than the true next frame, so no shown frame is ever
    dropped; a frame with no later packet in sight (the last) is always decoded. Without packet times every
    frame is decoded. Most clips' B-frames are non-reference: a quarter to a third of the decoding is saved at
    5 fps."""
    ctx = stream.codec_context
    tb = stream.time_base
    seen: list[int] = []  # every packet time so far, sorted (bisect)
    ahead: deque[av.Packet] = deque()

    def decode(packet: av.Packet) -> list[av.VideoFrame]:
        skip = False
        if packet.pts is not None and tb is not None:
            i = bisect.bisect_right(seen, packet.pts)
            if i < len(seen):
                t, t_next = float(packet.pts * tb) - offset, float(seen[i] * tb) - offset
                j = int(np.searchsorted(mids, t, side="left"))
                skip = j >= len(mids) or mids[j] >= t_next
        ctx.skip_frame = "NONREF" if skip else "DEFAULT"
        return ctx.decode(packet)

    flush = None
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's end-of-stream packet: it flushes the decoder, after the rest
            flush = packet
            continue
        if packet.pts is None:
            tb = None  # some packet has no time: decode everything from here on
        else:
            bisect.insort(seen, packet.pts)
        ahead.append(packet)
        if len(ahead) > LOOKAHEAD:
            yield from decode(ahead.popleft())
    while ahead:
        yield from decode(ahead.popleft())
    ctx.skip_frame = "DEFAULT"
    for frame in ctx.decode(flush):  # the frames the decoder still holds (reordering), timed like the rest
        if frame.time_base is None:
            frame.time_base = stream.time_base
        yield frame


def _images(container: av.container.InputContainer, stream: av.VideoStream, starts: np.ndarray, fps: float,
            offset: float, max_height: int | None, colour: bool, path: Path) -> list[np.ndarray | None]:
    """Decode from the keyframe before the first interval: per interval, the image on display at its midpoint."""
    mids = starts + 0.5 / fps
    images: list[np.ndarray | None] = [None] * len(starts)
    tb = stream.time_base
    rate = float(stream.average_rate) if stream.average_rate else 25.0
    fmt = "rgb24" if colour else "gray"
    start = float(starts[0])
    if start > 1.0 and tb is not None:
        try:  # to the keyframe at or before start; decoding from there is exact
            container.seek(int((start - 1.0 + offset) / tb), stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError:
            container.seek(0, stream=stream)

    k = 0  # next interval to fill
    prev = None  # (time, frame, converted image or None)
    n_decoded = 0

    def convert(item: list) -> np.ndarray:
        if item[2] is None:
            frame = item[1]
            w, h = _target_size(frame.width, frame.height, max_height)
            # rows of swscale's output are padded; dlib ignores numpy strides, so copy to contiguous rows
            item[2] = np.ascontiguousarray(frame.reformat(width=w, height=h, format=fmt).to_ndarray())
        return item[2]

    try:
        for frame in _shown_frames(container, stream, mids, offset):
            n_decoded += 1
            t = (frame.time - offset) if frame.time is not None else n_decoded / rate
            # every interval whose midpoint falls before this frame shows the previous frame
            while k < len(mids) and mids[k] < t:
                images[k] = convert(prev) if prev is not None else None
                k += 1
            prev = [t, frame, None]
            if k >= len(mids):
                break
    except av.error.FFmpegError as exc:
        raise _fail(path, f"video is corrupt or truncated: decoding failed after {n_decoded} frames ({exc})") from exc
    if n_decoded == 0:
        raise _fail(path, "no decodable video frames")
    if prev is not None:
        last_shown_until = prev[0] + 1.0 / rate
        while k < len(mids) and starts[k] < last_shown_until:  # the interval overlaps the last frame
            images[k] = convert(prev)
            k += 1
    # intervals before the first decoded frame (a stream starting late) take the first image we have
    first = next((i for i, im in enumerate(images) if im is not None), None)
    if first is not None:
        for i in range(first):
            images[i] = images[first]
    return images


def sample_frames(
    path: str | os.PathLike[str],
    start: float | None,
    end: float | None,
    fps: float,
    max_height: int | None = 360,
    colour: bool = False,
) -> SampledFrames:
    """Decode `path` and return one image per frame interval of [start, end) at `fps`.

    Times are seconds from the video stream's first frame. `end` defaults to the stream's duration. Intervals
    past the last decodable frame get no image (the caller marks them invalid). Unreadable, empty, truncated or
    undecodable files raise PipelineError(stage="face") naming the file."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise _fail(path, "no video stream")
        stream = container.streams.video[0]
        tb = stream.time_base
        offset = float(stream.start_time * tb) if stream.start_time is not None and tb is not None else 0.0
        end = _stream_end(container, stream, path) if end is None else end
        starts = frame_grid(0.0 if start is None else float(start), float(end), fps)
        if len(starts) == 0:
            return SampledFrames(starts, starts + 1.0 / fps, [])
        images = _images(container, stream, starts, fps, offset, max_height, colour, path)
    return SampledFrames(starts, starts + 1.0 / fps, images)
