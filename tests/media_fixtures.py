"""Real and deliberately broken media for the ingestion tests, made from the shared real clips at test time.

Nothing here is committed media: broken files are cut or re-muxed from /work/shared/data into a tmp folder.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import av
import numpy as np
import pytest

# the nearest shared/data above the checkout (a git worktree sits one level deeper than the main clone)
DATA = next((p / "shared" / "data" for p in Path(__file__).resolve().parents[1:] if (p / "shared" / "data").is_dir()),
            Path(__file__).resolve().parents[1].parent / "shared" / "data")
MOSI_CLIP = DATA / "mosi" / "raw" / "Oz06ZWiO20M_6.mp4"
MOSI_ID = "Oz06ZWiO20M_6"
MOSI_LABELS = DATA / "mosi" / "label.csv"
TWO_SPEAKERS = DATA / "speech" / "two_speakers_16k.wav"
TWO_SPEAKERS_STM = DATA / "speech" / "two_speakers_16k.stm"
FACE_CLIP = DATA / "faces" / "single_face.mp4"
MELD_DIR = DATA / "meld"


def need(*paths: Path) -> None:
    """Skip the calling test when the shared real data is not on this machine."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"real data not available: {', '.join(missing)}")


def mosi_transcript(segment_id: str = MOSI_ID) -> str:
    with MOSI_LABELS.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["id"] == segment_id:
                return row["text"]
    raise KeyError(segment_id)


def stm_utterances(path: Path = TWO_SPEAKERS_STM) -> list[tuple[float, float, str]]:
    """(start, end, text) per line of a NIST .stm transcript."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and not line.startswith(";;"):
            out.append((float(parts[3]), float(parts[4]), parts[5]))
    return out


def zero_byte(folder: Path) -> Path:
    p = folder / "zero.mp4"
    p.write_bytes(b"")
    return p


def truncated(folder: Path, source: Path = MOSI_CLIP, keep: float = 0.4) -> Path:
    """The first `keep` of a real mp4 whose index (moov) sits at the end: unreadable as media."""
    data = source.read_bytes()
    p = folder / f"truncated_{source.stem}.mp4"
    p.write_bytes(data[: int(len(data) * keep)])
    return p


def faststart_truncated(folder: Path, source: Path = MOSI_CLIP, keep: float = 0.5) -> Path:
    """A real clip re-muxed with its index first, then cut: it opens and decodes only its first part."""
    full = folder / f"faststart_{source.stem}.mp4"
    with av.open(str(source)) as src, av.open(str(full), "w", options={"movflags": "faststart"}) as dst:
        streams = {}
        for s in src.streams:
            if s.type in ("audio", "video"):
                streams[s.index] = dst.add_stream_from_template(s)
        for packet in src.demux():
            if packet.stream.index in streams and packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    data = full.read_bytes()
    p = folder / f"faststart_truncated_{source.stem}.mp4"
    p.write_bytes(data[: int(len(data) * keep)])
    return p


def corrupt(folder: Path, source: Path = MOSI_CLIP, n_bytes: int = 4000, seed: int = 0) -> Path:
    """A real clip with random bytes overwritten after its header."""
    data = bytearray(source.read_bytes())
    rng = random.Random(seed)
    for _ in range(n_bytes):
        data[rng.randrange(2000, len(data))] = rng.randrange(256)
    p = folder / f"corrupt_{source.stem}.mp4"
    p.write_bytes(bytes(data))
    return p


def without_audio(folder: Path, source: Path = FACE_CLIP, seconds: float | None = None, fps: int = 15) -> Path:
    """The real face clip's frames re-encoded into an mp4 that has no audio stream."""
    p = folder / f"noaudio_{source.stem}.mp4"
    with av.open(str(source)) as src, av.open(str(p), "w") as dst:
        vin = src.streams.video[0]
        out = dst.add_stream("mpeg4", rate=fps)
        out.width, out.height = vin.codec_context.width, vin.codec_context.height
        out.pix_fmt = "yuv420p"
        step, next_t, n = 1.0 / fps, 0.0, 0
        for frame in src.decode(vin):
            if seconds is not None and frame.time is not None and frame.time >= seconds:
                break
            if frame.time is not None and frame.time + 1e-6 < next_t:
                continue
            img = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24").reformat(format="yuv420p")
            img.pts = n
            for packet in out.encode(img):
                dst.mux(packet)
            n += 1
            next_t = n * step
        for packet in out.encode(None):
            dst.mux(packet)
    return p


def silent_frames_video(folder: Path, seconds: float = 2.0, fps: int = 10, size: tuple[int, int] = (160, 120)) -> Path:
    """A small synthetic video without audio (grey gradient frames), for decoder edge cases."""
    p = folder / "frames_only.mp4"
    w, h = size
    with av.open(str(p), "w") as dst:
        out = dst.add_stream("mpeg4", rate=fps)
        out.width, out.height, out.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.full((h, w, 3), (i * 7) % 255, np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            for packet in out.encode(frame):
                dst.mux(packet)
        for packet in out.encode(None):
            dst.mux(packet)
    return p
