"""Bad-input matrix (docs/failure-modes.md): the rows not already covered where their component is tested.

One build holds every bad row beside good ones; each bad row gives features with honest masks or a failure row
with a reason, and the good rows complete."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from feature_schemas import Store, validate
from flows.demo_corpus import SAMPLE_RATE, source_frames, write_video
from pipelines.recipes.videos import VideoConfig, build_videos
from tests import media_fixtures as mf

NON_ENGLISH = "¿Dónde está la biblioteca? Ça va très bien, merci. Größe 東京"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, dict[str, dict[str, Any]]]:
    mf.need(mf.MOSI_CLIP, mf.MOSI_LABELS, mf.FACE_CLIP)
    d = tmp_path_factory.mktemp("bad")
    silent = d / "silent.mp4"  # real face frames, an audio stream of digital silence
    write_video(silent, source_frames(mf.FACE_CLIP, 10, 240)[:20], np.zeros(2 * SAMPLE_RATE, np.float32), 10)
    good = {"video_path": str(mf.MOSI_CLIP), "transcript": mf.mosi_transcript(), "split": "train"}
    rows = [
        {**good, "segment_id": "good", "sentiment": -0.8},
        {"video_path": "silent.mp4", "segment_id": "silent_with_text", "transcript": "hello there", "split": "train"},
        {"video_path": "silent.mp4", "segment_id": "silent_no_text", "split": "train"},
        {**good, "segment_id": "non_english", "transcript": NON_ENGLISH, "split": "valid"},
        {**good, "segment_id": "dup", "sentiment": 1.0},
        {**good, "segment_id": "dup", "sentiment": 2.0},
        {**good, "segment_id": "too_positive", "sentiment": 4.5},
        {**good, "segment_id": "no_label", "split": "test"},
        {**good, "segment_id": "../escape"},
        {**good, "segment_id": "a/b"},
        {**good, "segment_id": "bad_split", "split": "dev-ish"},
    ]
    path = d / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    store = d / "store"
    build_videos(path, store, VideoConfig(face=None), progress=False)
    s = Store(store)
    return s, {r["item_id"]: r for r in s.failures().to_pylist()}


def test_good_rows_complete_and_the_store_validates(built) -> None:
    store, _ = built
    assert validate(store.path).ok
    ids = set(store.segments().column("segment_id").to_pylist())
    assert {"good", "no_label", "non_english"} <= ids


def test_silent_audio(built) -> None:
    store, failures = built
    ids = set(store.segments().column("segment_id").to_pylist())
    # with a transcript the words are placed (forced or uniform) and say how; without one nothing can be heard
    assert "silent_with_text" in ids or "silent_with_text" in failures
    if "silent_with_text" in ids:
        seg = store.segment("silent_with_text")
        assert seg["words"] == ["hello", "there"]
    assert "silent_no_text" in failures and failures["silent_no_text"]["reason"]


def test_non_english_transcript_aligns_without_crash(built) -> None:
    store, _ = built
    seg = store.segment("non_english")
    assert len(seg["words"]) >= 8 and np.isfinite(seg["egemaps"]).all()


def test_label_problems_and_ids(built) -> None:
    store, failures = built
    assert "outside [-3.0, 3.0]" in failures["too_positive"]["reason"]
    assert "segment id 'dup' appears 2 times" in failures["dup"]["reason"]
    assert "dup" not in set(store.segments().column("segment_id").to_pylist())
    assert store.segment("no_label")["sentiment"] is None  # a missing label is null, not 0
    for bad in ("../escape", "a/b"):
        assert bad in failures and failures[bad]["stage"] == "read"
    assert "split" in failures["bad_split"]["reason"]
    # no file or folder was created from an id
    assert not list(store.path.parent.rglob("escape*"))
