"""Speaker-relative face cues across a speaker's media (issue 27.2): a manifest's `speaker` column groups one
speaker's files into one unit, and the mediapipe set's rel_* cues are against the median over all of that
speaker's frames with a face; rows without a speaker keep their video's own baseline. Real builds of CREMA-D
actor 1001's four clips."""

from __future__ import annotations

import csv
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from tests import media_fixtures as mf

DATA = Path(os.environ.get("MMOLRE_SHARED_DATA") or mf.DATA)
ACTED = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "NEU": "neutral"}  # CREMA-D code -> expression
CLIPS = {code: DATA / "cremad" / f"1001_DFA_{code}_XX.flv" for code in ACTED}
SET, SUMMARY = "face_mediapipe", "face_mediapipe_summary"

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None or importlib.util.find_spec("fer") is None,
                       reason="mediapipe / fer not installed (make install puts them in with --no-deps)"),
    pytest.mark.skipif(not all(p.is_file() for p in CLIPS.values()),
                       reason=f"CREMA-D clips not found under {DATA / 'cremad'}"),
]


def _write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One build at the default 5 frames a second (at 2 a second the acted emotion tops 2 of 4): the four clips as speaker 1001 (ids one_*), again as two speakers a (anger,
    disgust) and b (fear, neutral) (ids two_*), and again without a speaker (ids own_*)."""
    from feature_schemas import Store
    from pipelines.recipes.videos import VideoConfig, build_videos

    d = tmp_path_factory.mktemp("speaker")
    rows = []
    for code, clip in CLIPS.items():
        two = "a" if code in ("ANG", "DIS") else "b"
        for prefix, speaker in (("one", "1001"), ("two", two), ("own", "")):
            rows.append({"video_path": str(clip), "segment_id": f"{prefix}_{code}", "transcript": "don't forget a jacket",
                         "split": "test", "speaker": speaker})
    manifest = _write_manifest(d / "manifest.csv", rows)
    config = VideoConfig(align=False, asr_fallback=False, transcribe=False, fps=5.0)
    result = build_videos(manifest, d / "store", config, progress=False)
    assert result.n_failures == 0 and result.n_segments == 12
    return Store(d / "store")


def _summaries(store) -> dict[str, np.ndarray]:
    t = store.utterance(feature_sets=[SUMMARY]).to_pydict()
    return {sid: np.asarray(v, np.float64) for sid, v in zip(t["segment_id"], t[SUMMARY], strict=True)}


def _baseline(summary: np.ndarray, names: list[str]) -> np.ndarray:
    """mean(x) - mean(rel_x) over the same frames with a face: the baseline the segment's rel_x was taken against."""
    from pipelines.extract.face.mediapipe_backend import DIMS

    return np.array([summary[DIMS.index(n)] - summary[DIMS.index("rel_" + n)] for n in names])


def test_acted_emotion_has_the_highest_speaker_relative_score_in_a_build(store):
    """Through a real build with the actor as one speaker, the acted emotion's clip-mean rel_expr_* is the highest
    on at least 3 of his 4 clips."""
    from pipelines.extract.face.expression import EXPRESSIONS
    from pipelines.extract.face.mediapipe_backend import DIMS

    s = _summaries(store)
    rel = [DIMS.index(f"rel_expr_{e}") for e in EXPRESSIONS]
    top = {code: EXPRESSIONS[int(np.argmax(s[f"one_{code}"][rel]))] for code in ACTED}
    assert sum(top[c] == ACTED[c] for c in ACTED) >= 3, top


def test_one_speaker_shares_one_baseline_and_two_speakers_get_two(store):
    """All of a speaker's segments are relative to one baseline; two speakers' baselines differ; without a speaker
    each clip has its own (the four clips' baselines differ)."""
    from pipelines.extract.face.expression import EXPRESSIONS

    names = [f"expr_{e}" for e in EXPRESSIONS] + ["mouth_open", "brow_raise_l"]
    s = _summaries(store)
    base = {sid: _baseline(v, names) for sid, v in s.items()}
    for a, b in (("one_ANG", "one_DIS"), ("one_ANG", "one_NEU"), ("two_ANG", "two_DIS"), ("two_FEA", "two_NEU")):
        assert np.allclose(base[a], base[b], atol=1e-4), (a, b)
    assert not np.allclose(base["two_ANG"], base["two_FEA"], atol=1e-3)
    assert not np.allclose(base["two_ANG"], base["one_ANG"], atol=1e-3)
    own = [base[f"own_{c}"] for c in ACTED]
    assert all(not np.allclose(own[0], o, atol=1e-3) for o in own[1:])


def test_segments_table_stores_each_rows_speaker(store):
    """Schema 2.2's optional `speaker` column: the row's id, null for rows without one; the store validates."""
    from feature_schemas import validate

    t = store.segments(columns=["segment_id", "speaker"]).to_pydict()
    got = dict(zip(t["segment_id"], t["speaker"], strict=True))
    assert got["one_FEA"] == "1001" and got["two_ANG"] == "a" and got["two_NEU"] == "b" and got["own_DIS"] is None
    report = validate(store.location)
    assert report.ok, str(report)


def test_speaker_rows_are_planned_as_one_unit_per_speaker(tmp_path):
    """The plan: one unit per speaker holding all their files; rows without a speaker one unit per file; a bad
    speaker id is a failed row naming it."""
    from pipelines.recipes.videos import VideoConfig, video_units
    from pipelines.stages.media import MediaUnit, SpeakerUnit

    rows = [{"video_path": str(CLIPS["ANG"]), "segment_id": "x1", "speaker": "1001"},
            {"video_path": str(CLIPS["DIS"]), "segment_id": "x2", "speaker": "1001"},
            {"video_path": str(CLIPS["FEA"]), "segment_id": "x3", "speaker": ""},
            {"video_path": str(CLIPS["NEU"]), "segment_id": "x4", "speaker": "a/b"}]
    units, _, report = video_units(str(_write_manifest(tmp_path / "m.csv", rows)), VideoConfig(face=None))
    kinds = {u.unit_id: type(u.payload) for u in units}
    assert kinds == {"speaker:1001": SpeakerUnit, f"video:{CLIPS['FEA']}": MediaUnit, "input-rejections": kinds.get(
        "input-rejections")}
    speaker = next(u.payload for u in units if isinstance(u.payload, SpeakerUnit))
    assert [f.path for f in speaker.files] == [str(CLIPS["ANG"]), str(CLIPS["DIS"])]
    rejected = next(u.payload for u in units if u.unit_id == "input-rejections")
    assert "speaker" in rejected.failures[0].reason and rejected.failures[0].item_id == "x4"
    assert report["speakers_planned"] == 1 and report["videos"] == 3
