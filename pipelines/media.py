"""Decoding media with PyAV: what a file holds (probe) and its audio as 16 kHz mono float32 samples.
Face backends sample their own frames (pipelines/extract/face/frames.py).

Every failure to read a file becomes a `PipelineError(stage="decode")` naming the file and what is wrong
(empty, not a media file or truncated before its index, no decodable stream). A file without an audio
stream is not an error: `read_audio` returns None and the caller records that the segment has no audio.
PyAV is imported on first decode, so checking paths (`path_problem`) in a text-only build never loads it.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import PipelineError

if TYPE_CHECKING:
    import av

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class MediaInfo:
    """What the container says about a file (durations are the container's claims, not what decodes)."""

    path: str
    duration: float | None
    has_audio: bool
    has_video: bool
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    audio_rate: int | None = None


def _error(path: Path, message: str) -> PipelineError:
    return PipelineError(f"{path}: {message}", stage="decode", source_path=str(path))


def path_problem(path: str | Path, what: str = "a media file") -> str | None:
    """Why `path` cannot be read as a media file (missing, a folder, a FIFO that would block the decoder, a
    device, a symlink loop...), or None for a regular file. Cheap: one stat, never an open."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop"
        if os.path.islink(path):
            return f"is a broken symbolic link (to {os.readlink(path)!r})"
        if e.errno == errno.EACCES:
            return "cannot be read (permission denied)"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return "does not exist"
        return f"cannot be read ({e.strerror})"
    if stat.S_ISDIR(mode):
        return f"is a folder, not {what}"
    if stat.S_ISFIFO(mode):
        return f"is a named pipe (FIFO), not {what}"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return f"is a device, not {what}"
    if stat.S_ISSOCK(mode):
        return f"is a socket, not {what}"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    return None


def open_media(path: str | Path) -> av.container.InputContainer:
    """Open a file for reading, turning every way it can be unreadable into one clear PipelineError."""
    import av

    path = Path(path)
    problem = path_problem(path)
    if problem is not None:
        raise _error(path, problem)
    if path.stat().st_size == 0:
        raise _error(path, "file is empty (0 bytes)")
    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as e:
        raise _error(path, f"cannot open as media (corrupt, or truncated before its index): {e}") from None


def probe(path: str | Path) -> MediaInfo:
    import av

    with open_media(path) as c:
        video = c.streams.video[0] if c.streams.video else None
        audio = c.streams.audio[0] if c.streams.audio else None
        duration = c.duration / av.time_base if c.duration else None
        if duration is None:
            for s in (video, audio):
                if s is not None and s.duration and s.time_base:
                    duration = max(duration or 0.0, float(s.duration * s.time_base))
        return MediaInfo(
            path=str(path),
            duration=duration,
            has_audio=audio is not None,
            has_video=video is not None,
            fps=float(video.average_rate) if video is not None and video.average_rate else None,
            width=video.codec_context.width if video is not None else None,
            height=video.codec_context.height if video is not None else None,
            audio_rate=audio.codec_context.sample_rate if audio is not None else None,
        )


def read_audio(path: str | Path, start: float | None = None, end: float | None = None,
               rate: int = SAMPLE_RATE) -> np.ndarray | None:
    """Mono float32 samples at `rate`, sample 0 at time `start` (or 0) of the file; None when the file has no
    audio stream. A stream that ends early (truncated file) yields what decodes; nothing at all is an error."""
    import av

    path = Path(path)
    start = max(0.0, start or 0.0)
    with open_media(path) as c:
        if not c.streams.audio:
            return None
        stream = c.streams.audio[0]
        if start > 1.0:
            c.seek(int(max(0.0, start - 0.5) * av.time_base), backward=True, any_frame=False)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks: list[np.ndarray] = []
        t0: float | None = None
        error: Exception | None = None
        try:
            for frame in c.decode(stream):
                for out in resampler.resample(frame):
                    if t0 is None:
                        t0 = out.time if out.time is not None else 0.0
                    chunks.append(out.to_ndarray().reshape(-1))
                if end is not None and frame.time is not None and frame.time > end:
                    break
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as e:  # damaged packets: keep what decoded so far
            error = e
    if not chunks:
        why = f" ({error})" if error else ""
        raise _error(path, f"audio stream has no decodable samples{why}")
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    # place sample 0 at `start`: pad when the stream begins later, drop what lies before
    offset = int(round(((t0 or 0.0) - start) * rate))
    if offset > 0:
        samples = np.concatenate([np.zeros(offset, np.float32), samples])
    elif offset < 0:
        samples = samples[-offset:]
    if end is not None:
        samples = samples[: max(0, int(round((end - start) * rate)))]
    return np.ascontiguousarray(samples)


def cut(samples: np.ndarray, start: float, end: float | None, rate: int = SAMPLE_RATE, offset: float = 0.0) -> np.ndarray:
    """Samples of [start, end) from an array whose sample 0 lies at time `offset`."""
    a = max(0, int(round((start - offset) * rate)))
    b = len(samples) if end is None else max(a, int(round((end - offset) * rate)))
    return samples[a:b]


def to_pcm16(samples: np.ndarray) -> bytes:
    """float32 in [-1, 1] to little-endian 16-bit PCM, as pocketsphinx reads it."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
