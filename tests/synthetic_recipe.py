"""A small deterministic recipe for store tests: each unit is a video with a few segments of random frames.

Top-level functions only, so Dask and process pools can pickle them.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np

from feature_schemas import FeatureSet
from pipelines.errors import PipelineError
from pipelines.records import FrameFeatures, SegmentRecord, UnitResult, WordFeatures, Words, WorkUnit

FEATURE_SETS = [
    FeatureSet("audio_lld", tuple(f"a{i}" for i in range(5)), "audio", "synthetic", "1", {"hz": 100}, 100.0),
    FeatureSet("face_geo", tuple(f"f{i}" for i in range(3)), "visual", "synthetic", "1", {"hz": 30}, 30.0),
    FeatureSet("text_vec", tuple(f"t{i}" for i in range(4)), "text", "synthetic", "1", {}, None),
]
SPLITS = ("train", "valid", "test")


def make_units(n_videos: int, segments_per_video: int = 3, bad: set[int] | None = None, sleep: float = 0.0,
               die: dict[int, str] | None = None) -> list[WorkUnit]:
    """`die`: video index -> a path; that unit kills its process (as a native crash or the OOM killer would)
    while the path does not exist, and appends a line to `<path>.attempts` each time it starts."""
    return [
        WorkUnit(f"vid{v:03d}", f"key{v}", {"segments": segments_per_video, "bad": v in (bad or set()), "sleep": sleep,
                                            "die_unless": (die or {}).get(v)})
        for v in range(n_videos)
    ]


def process(unit: WorkUnit) -> UnitResult:
    if cure := unit.payload.get("die_unless"):
        with open(f"{cure}.attempts", "a") as f:
            f.write(f"{os.getpid()}\n")
        if not os.path.exists(cure):
            os._exit(1)
    if unit.payload.get("sleep"):
        time.sleep(unit.payload["sleep"])
    if unit.payload.get("bad"):
        raise PipelineError(f"{unit.unit_id}.mp4: moov atom not found (truncated file)", stage="decode", source_path=f"{unit.unit_id}.mp4")
    seed = int(hashlib.sha256(unit.unit_id.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    split = SPLITS[seed % 3]
    records = []
    for i in range(unit.payload["segments"]):
        start = 10.0 * i
        n_words = int(rng.integers(0, 8))
        bounds = np.sort(rng.uniform(start, start + 5, size=2 * n_words)).reshape(-1, 2)
        words = Words([f"w{j}" for j in range(n_words)], bounds[:, 0], bounds[:, 1], np.ones(n_words), "given")
        t_a = np.arange(start, start + 5, 0.01)
        audio = rng.normal(size=(len(t_a), 5)).astype(np.float32)
        audio[rng.random(len(t_a)) < 0.02] = -np.inf
        t_f = np.arange(start, start + 5, 1 / 30)
        face_valid = rng.random(len(t_f)) > 0.3
        records.append(
            SegmentRecord(
                segment={
                    "segment_id": f"{unit.unit_id}[{i}]",
                    "video_id": unit.unit_id,
                    "split": split,
                    "start": start,
                    "end": start + 5,
                    "transcript": " ".join(words.words),
                    "sentiment": float(rng.uniform(-3, 3)),
                    **{e: float(rng.uniform(0, 3)) for e in ("happy", "sad", "anger", "surprise", "disgust", "fear")},
                    "source": "synthetic",
                    "source_path": f"{unit.unit_id}.mp4",
                },
                words=words,
                frames={
                    "audio_lld": FrameFeatures(t_a, t_a + 0.01, audio),
                    "face_geo": FrameFeatures(t_f, t_f + 1 / 30, rng.normal(size=(len(t_f), 3)), valid=face_valid),
                },
                word_features={"text_vec": WordFeatures(rng.normal(size=(n_words, 4)))},
            )
        )
    return UnitResult(records=records, report={"videos_read": 1})
