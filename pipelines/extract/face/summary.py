"""A per-segment summary of a face feature set (schema 2's utterance level): the mean of the usable frames and
the fraction of frames that were usable, so a model sees how much face there was as well as what it did."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from feature_schemas import FeatureSet

from ...records import FrameFeatures

VALID_FRACTION = "valid_fraction"


def summary_feature_set(face: FeatureSet) -> FeatureSet:
    """`<face set>_summary`: each dimension's mean over valid frames, then the fraction of valid frames."""
    return replace(face, name=f"{face.name}_summary", dims=tuple(f"{d}_mean" for d in face.dims) + (VALID_FRACTION,),
                   level="utterance", frame_rate=None,
                   config={**face.config, "summary": "mean of valid, finite frames; fraction of frames valid"},
                   description=f"per-segment summary of {face.name}: mean of its usable frames and their share")


def summarise_frames(frames: FrameFeatures) -> np.ndarray | None:
    """(D + 1,) summary, or None when no frame is usable (the writer marks the set absent for the segment)."""
    usable = frames.valid & np.isfinite(frames.values).all(axis=1)
    if not usable.any():
        return None
    mean = frames.values[usable].mean(axis=0)
    return np.concatenate([mean, [usable.mean()]]).astype(np.float32)
