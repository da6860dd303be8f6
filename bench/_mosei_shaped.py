"""Synthetic inputs shaped like CMU-MOSEI's SDK sequences, for benchmarks (no real data needed).

Per video: COVAREP-like audio (100 Hz, 74-d), FACET-like face (30 Hz, 35-d, a few frames missing as when no
face is found), and forced-aligned words at ~2.5 words/s on a 10 ms grid (as P2FA's are), with pauses and a
few zero-length words. Each video is generated from its own seed, so any process can rebuild the same input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCALES = {
    "small": {"videos": 4, "seconds": 60.0},
    "full": {"videos": 200, "seconds": 180.0},
}


@dataclass
class Stream:
    start: np.ndarray  # (N,) float64 seconds
    end: np.ndarray  # (N,) float64
    values: np.ndarray  # (N, D) float32


@dataclass
class Video:
    video_id: str
    word_start: np.ndarray  # (W,) float64
    word_end: np.ndarray  # (W,) float64
    words: list[str]
    audio: Stream
    face: Stream


def _stream(rng: np.random.Generator, seconds: float, hz: float, dims: int, drop: float) -> Stream:
    n = int(seconds * hz)
    start = np.arange(n) / hz
    keep = rng.random(n) >= drop
    loc = rng.uniform(-3, 3, dims).astype(np.float32)
    scale = rng.uniform(0.2, 2.0, dims).astype(np.float32)
    values = rng.standard_normal((int(keep.sum()), dims), dtype=np.float32) * scale + loc
    return Stream(start[keep], start[keep] + 1 / hz, values)


def _words(rng: np.random.Generator, seconds: float, rate: float) -> tuple[np.ndarray, np.ndarray]:
    n = int(seconds * rate * 1.3) + 8
    duration = rng.uniform(0.12, 0.5, n)  # mean 0.31 s
    duration[rng.random(n) < 0.005] = 0.0  # aligner artefacts: zero-length words
    gap = np.where(rng.random(n) < 0.3, rng.exponential(0.3, n), 0.0)  # mean period ~0.4 s = 2.5 words/s
    start = np.round(np.cumsum(gap + np.concatenate([[0.0], duration[:-1]])) + 0.2, 2)
    end = np.round(start + duration, 2)
    inside = end <= seconds
    return start[inside], end[inside]


def make_video(index: int, seconds: float = 180.0, words_per_second: float = 2.5) -> Video:
    """Video `index`, deterministic; about `words_per_second * seconds` words."""
    rng = np.random.default_rng([20251127, index])
    word_start, word_end = _words(rng, seconds, words_per_second)
    tokens = [f"w{i % 997}" for i in range(len(word_start))]
    audio = _stream(rng, seconds, 100.0, 74, drop=0.0)
    face = _stream(rng, seconds, 30.0, 35, drop=0.03)
    return Video(f"video{index:04d}", word_start, word_end, tokens, audio, face)
