"""Speaker-relative face features: each cue as its deviation from the speaker's own resting value.

A face's resting look (a long upper lip, low brows, a "sad" face to a classifier) shifts every absolute cue; a
change of expression within a video shows as the deviation from that video's typical value. For a cue x and the
frames of one video (all its segments) that have a face, the baseline is the median of x over those frames, and

    rel_x(t) = x(t) - median over the video's frames with a face of x

is stored as its own dimension `rel_<x>` (0 on frames without a face, which are masked anyway). The median, not
the mean, so that a few strongly expressive frames do not move the baseline. Within a build, the media stage
hands every segment of its unit to `finish_video` once all are extracted: one video's, or, for manifest rows that
name a `speaker`, all of that speaker's media (one unit per speaker), so the baseline is the speaker's median over
all their frames with a face. A lone `extract_video` call is its own video.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ...records import FrameFeatures

PREFIX = "rel_"


def relative_dims(base: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(PREFIX + d for d in base)


def baseline(frames: list[FrameFeatures], cols: list[int]) -> np.ndarray | None:
    """Median of each column over the frames with a face (valid, finite) of all `frames`; None when none."""
    rows = [f.values[f.valid][:, cols] for f in frames if f.valid is not None and len(f.start)]
    stacked = np.concatenate(rows) if rows else np.zeros((0, len(cols)), np.float32)
    stacked = stacked[np.isfinite(stacked).all(axis=1)]
    return np.median(stacked.astype(np.float64), axis=0) if len(stacked) else None


def with_relative(frames: list[FrameFeatures], cols: list[int], rel_cols: list[int]) -> list[FrameFeatures]:
    """Each FrameFeatures with columns `rel_cols` set to columns `cols` minus their baseline over all `frames`
    (valid frames only; the others keep 0)."""
    base = baseline(frames, cols)
    out = []
    for f in frames:
        values = f.values.copy()
        values[:, rel_cols] = 0.0
        if base is not None and f.valid is not None and f.valid.any():
            values[np.ix_(f.valid, rel_cols)] = (values[np.ix_(f.valid, cols)] - base).astype(values.dtype)
        out.append(replace(f, values=values))
    return out
