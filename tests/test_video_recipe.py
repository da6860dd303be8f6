"""The video recipe end to end on real clips, with broken inputs in the same build."""

from __future__ import annotations

import functools
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from feature_schemas import Store, coverage_column, validate
from pipelines.recipes.meld import read_meld
from pipelines.recipes.mosi_text import read_mosi_labels
from pipelines.recipes.videos import VideoConfig, build_videos, process_video_unit, video_units
from pipelines.stages.media import MediaUnit, RejectedRows, TextUnit
from tests import media_fixtures as mf

OOV = "zorbleflax quintaplume vexillocrat snarfblat grumbotic wibblywob"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest mixing good clips, broken files, missing transcripts and a text-only row."""
    mf.need(mf.MOSI_CLIP, mf.MOSI_LABELS, mf.FACE_CLIP)
    d = tmp_path_factory.mktemp("video_inputs")
    rows: list[dict[str, Any]] = [
        {"video_path": str(mf.MOSI_CLIP), "segment_id": "mosi", "transcript": mf.mosi_transcript(),
         "sentiment": -0.8, "split": "train"},
        {"video_path": str(mf.MOSI_CLIP), "segment_id": "mosi_asr", "transcript": "", "split": "train"},
        {"video_path": str(mf.MOSI_CLIP), "segment_id": "mosi_oov", "transcript": OOV, "split": "valid",
         "start": 1.0, "end": 6.0},
        {"video_path": mf.without_audio(d).name, "segment_id": "noaudio", "transcript": "hello there how are you",
         "split": "test", "emotions": {"happy": 2.0}},
        {"video_path": mf.without_audio(d).name, "segment_id": "noaudio_notext", "split": "test", "start": 0.5},
        {"video_path": mf.truncated(d).name, "segment_id": "trunc", "transcript": "some words", "split": "train"},
        {"video_path": mf.zero_byte(d).name, "segment_id": "zero", "transcript": "some words", "split": "train"},
        {"video_path": mf.faststart_truncated(d).name, "segment_id": "half", "transcript": mf.mosi_transcript(),
         "split": "valid"},
        {"segment_id": "txt", "transcript": "I really loved this movie", "sentiment": 2.5, "split": "valid"},
        {"video_path": "absent.mp4", "segment_id": "gone", "transcript": "x", "split": "train"},
    ]
    path = d / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def built(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Any]:
    store = tmp_path_factory.mktemp("video_store") / "store"
    result = build_videos(inputs, store, VideoConfig(), progress=False)
    return Store(store), result


def aligned_rows(store: Store) -> dict[str, dict[str, Any]]:
    out = {}
    for split in store.splits():
        for row in store.aligned(split).to_pylist():
            out[row["segment_id"]] = row
    return out


def test_build_completes_around_broken_inputs(built: tuple[Store, Any]) -> None:
    store, result = built
    report = validate(store.path)
    assert report.ok, str(report)
    assert set(store.aligned_sets()) == {"text_minilm", "egemaps", "face_mediapipe"}
    assert set(store.utterance_sets()) == {"text_minilm_sentence", "egemaps_functionals", "face_mediapipe_summary"}
    rows = aligned_rows(store)
    failures = {r["item_id"]: r for r in store.failures().to_pylist()}
    # a file that decodes only in part either builds (its late words masked) or fails saying so
    assert ("half" in rows) != ("half" in failures)
    if "half" in failures:
        assert "truncated" in failures["half"]["reason"] and failures["half"]["source_path"].endswith(".mp4")
    rows.pop("half", None)
    failures.pop("half", None)
    assert set(rows) == {"mosi", "mosi_asr", "mosi_oov", "noaudio", "txt"}
    assert set(failures) == {"trunc", "zero", "gone", "noaudio_notext"}
    assert failures["trunc"]["stage"] == "decode" and "cannot open as media" in failures["trunc"]["reason"]
    assert failures["zero"]["stage"] == "decode" and "0 bytes" in failures["zero"]["reason"]
    assert failures["gone"]["stage"] == "read" and "absent.mp4 does not exist" in failures["gone"]["reason"]
    assert failures["noaudio_notext"]["stage"] == "align" and "no usable audio" in failures["noaudio_notext"]["reason"]
    assert all(r["source_path"] for r in failures.values())
    assert result.n_segments + result.n_failures == 10 and result.n_segments >= 5


def test_real_clip_has_aligned_words_and_finite_features(built: tuple[Store, Any]) -> None:
    store, _ = built
    seg = store.segment("mosi")
    assert seg["split"] == "train" and seg["sentiment"] == pytest.approx(-0.8) and seg["source"] == "manifest"
    assert seg["start"] == 0.0 and seg["end"] == pytest.approx(7.5, abs=0.1)
    row = aligned_rows(store)["mosi"]
    assert row["align_method"] == "forced" and row["words"][:3] == ["and", "sucker", "punch"]
    start, end = np.array(row["word_start"]), np.array(row["word_end"])
    assert (start >= 0).all() and (end <= 7.5).all() and (np.diff(start) > 0).all()
    assert np.isfinite(seg["egemaps"]).all() and (seg[coverage_column("egemaps")] > 0.9).all()
    assert seg["egemaps"].shape == (16, 25) and seg["text_minilm"].shape == (16, 384)
    assert (seg[coverage_column("text_minilm")] == 1).all()
    face_cov = seg[coverage_column("face_mediapipe")]
    assert face_cov.mean() > 0.5  # the speaker's face is found in most frames


def test_missing_transcript_is_recognised(built: tuple[Store, Any]) -> None:
    store, _ = built
    seg = store.segment("mosi_asr")
    assert "sucker punch" in seg["transcript"].lower()
    assert aligned_rows(store)["mosi_asr"]["align_method"] == "asr"
    assert (seg[coverage_column("egemaps")] > 0).all()


def test_unknown_words_and_cut_segments(built: tuple[Store, Any]) -> None:
    store, _ = built
    row = aligned_rows(store)["mosi_oov"]
    assert row["words"] == OOV.split() and row["align_method"] in ("forced", "asr", "uniform")
    assert min(row["word_start"]) >= 1.0 and max(row["word_end"]) <= 6.0 + 1e-6
    seg = store.segment("mosi_oov")
    assert (seg["start"], seg["end"]) == (1.0, 6.0) and np.isfinite(seg["egemaps"]).all()


def test_masks_are_honest_for_missing_modalities(built: tuple[Store, Any]) -> None:
    store, _ = built
    noaudio = store.segment("noaudio")
    assert aligned_rows(store)["noaudio"]["align_method"] == "uniform"
    assert (noaudio[coverage_column("egemaps")] == 0).all() and (noaudio["egemaps"] == 0).all()
    assert noaudio[coverage_column("face_mediapipe")].mean() > 0.5 and noaudio["happy"] == 2.0
    txt = store.segment("txt")
    assert aligned_rows(store)["txt"]["align_method"] == "none" and np.isnan(txt["word_start"]).all()
    assert (txt[coverage_column("egemaps")] == 0).all() and (txt[coverage_column("face_mediapipe")] == 0).all()
    assert (txt[coverage_column("text_minilm")] == 1).all() and txt["start"] is None
    if "half" in aligned_rows(store):  # a file that decodes only in part: its audio covers the first words
        half = store.segment("half")
        assert half[coverage_column("egemaps")].max() > 0 and np.isfinite(half["egemaps"]).all()


def test_report_and_rerun(built: tuple[Store, Any], inputs: Path) -> None:
    store, _ = built
    counters = store.manifest.report["counters"]
    assert counters["videos_without_audio"] == 1 and counters["videos_unreadable"] == 2
    assert counters["segments_transcribed"] == 1 and counters["rows_rejected"] == 1
    assert counters["align.rules"] >= 5
    again = build_videos(inputs, store.path, VideoConfig(), progress=False)
    assert again.shards_written == 0 and again.shards_skipped > 0


def test_units_are_per_video_and_picklable(inputs: Path) -> None:
    config = VideoConfig(face=None)
    units, sets, report = video_units(inputs, config)
    assert [fs.name for fs in sets] == ["text_minilm", "egemaps", "text_minilm_sentence", "egemaps_functionals"]
    kinds = [type(u.payload) for u in units]
    assert kinds.count(MediaUnit) == 5 and kinds.count(TextUnit) == 1 and kinds.count(RejectedRows) == 1
    mosi_unit = next(u for u in units if isinstance(u.payload, MediaUnit) and u.payload.path == str(mf.MOSI_CLIP))
    assert [s.segment_id for s in mosi_unit.payload.specs] == ["mosi", "mosi_asr", "mosi_oov"]
    process = pickle.loads(pickle.dumps(functools.partial(process_video_unit, config=config)))
    unit = pickle.loads(pickle.dumps(next(u for u in units if isinstance(u.payload, TextUnit))))
    assert unit.payload.absent == (("egemaps", 25),)  # the build's audio set, which a unit without media cannot fill
    result = process(unit)
    assert [r.segment_id for r in result.records] == ["txt"] and set(result.records[0].frames) == {"egemaps"}
    assert set(result.records[0].utterance_features) == {"text_minilm_sentence"}  # text only: no audio functionals
    assert report["segments_planned"] == 9 and report["rows_rejected"] == 1


def test_text_only_label_file_without_face(tmp_path: Path) -> None:
    mf.need(mf.MOSI_LABELS)
    parsed = read_mosi_labels(mf.MOSI_LABELS)
    parsed.specs = [s for s in parsed.specs if s.video_id in {"03bSnISJMiM", "Oz06ZWiO20M", "c5xsKMxpXnc"}]
    result = build_videos(parsed, tmp_path / "s", VideoConfig(face=None, text_segments_per_unit=8), progress=False)
    store = Store(tmp_path / "s")
    assert validate(store.path).ok and result.n_failures == 0
    assert set(store.feature_sets) == {"text_minilm", "text_minilm_sentence"}  # no media anywhere: no audio or face set
    assert set(store.utterance_sets()) == {"text_minilm_sentence"}
    u = store.utterance(columns=["segment_id"], feature_sets=store.utterance_sets())
    assert all(u.column("text_minilm_sentence__present").to_pylist())
    segs = store.segments().to_pylist()
    assert len(segs) == len(parsed.specs) and {s["source"] for s in segs} == {"mosi-labels"}
    assert {s["split"] for s in segs} <= {"train", "valid", "test"}


def test_word_vectors_read_each_word_with_its_punctuation(tmp_path: Path) -> None:
    """MELD's "What?" is stored as the word "What", and its vector is MiniLM's reading of "What?"."""
    from pipelines.extract.text import encode_words

    mf.need(mf.MELD_DIR / "dev_sent_emo.csv")
    parsed = read_meld(mf.MELD_DIR / "dev_sent_emo.csv", "valid")
    parsed.specs = parsed.specs[:2]  # "Oh my God, he's lost it. He's totally lost it." and "What?"
    build_videos(parsed, tmp_path / "s", VideoConfig(face=None), progress=False)
    store = Store(tmp_path / "s")
    what = store.segment("valid_dia0_utt1")
    assert list(what["words"]) == ["What"] and store.segment("valid_dia0_utt0")["transcript"].startswith("Oh my God,")
    as_written = encode_words([["What"]], written=[["What?"]])[0].features.values
    bare = encode_words([["What"]])[0].features.values
    np.testing.assert_allclose(what["text_minilm"], as_written, atol=1e-5)
    assert np.abs(what["text_minilm"] - bare).max() > 1e-2


def test_audio_file_with_utterance_times(tmp_path: Path) -> None:
    """Thirteen utterances of one real two-speaker recording: one unit, cut per segment, words inside their times."""
    mf.need(mf.TWO_SPEAKERS, mf.TWO_SPEAKERS_STM)
    utterances = mf.stm_utterances()
    manifest = tmp_path / "speech.csv"
    lines = ["video_path,segment_id,start,end,transcript,split"]
    lines += [f'{mf.TWO_SPEAKERS},utt{i:02d},{s},{e},"{text}",test' for i, (s, e, text) in enumerate(utterances)]
    manifest.write_text("\n".join(lines) + "\n")
    config = VideoConfig(face="dlib")
    units, _, _ = video_units(manifest, config)
    assert len(units) == 1 and len(units[0].payload.specs) == len(utterances)
    assert not units[0].payload.pictures  # a .wav: the face backend is not started for it
    build_videos(manifest, tmp_path / "s", config, progress=False)
    store = Store(tmp_path / "s")
    assert validate(store.path).ok and store.failures().num_rows == 0
    rows = aligned_rows(store)
    for i, (s, e, _) in enumerate(utterances):
        seg = store.segment(f"utt{i:02d}")
        assert (seg["start"], seg["end"]) == (s, e)
        assert (seg["word_start"] >= s - 0.3).all() and (seg["word_end"] <= e + 0.3).all()
        assert (seg[coverage_column("egemaps")] > 0).all()
        assert rows[f"utt{i:02d}"]["align_method"] in ("forced", "asr")
    assert set(store.aligned_sets()) == {"text_minilm", "egemaps"}  # an audio file: no face set to declare
    frames = store.manifest.report["counters"]
    assert frames["files_without_video"] == 1 and frames["segments.forced"] >= len(utterances) - 2


PLAN_PROBE = """
import json, pickle, sys
from pipelines.recipes.videos import VideoConfig, video_units
units, sets, _ = video_units(sys.argv[1], VideoConfig(face="mediapipe"))
open(sys.argv[2], "wb").write(pickle.dumps(units))
print(json.dumps({"sets": [fs.name for fs in sets],
                  "loaded": {m: m in sys.modules for m in ("torch", "transformers", "mediapipe")}}))
"""

# a fresh process, as a build worker: unpickles one unit and processes it
UNIT_PROBE = """
import json, pickle, sys
from pipelines.recipes.videos import VideoConfig, process_video_unit
from pipelines.stages.media import MediaUnit, TextUnit
kind = {"text": TextUnit, "wav": MediaUnit}[sys.argv[2]]
units = pickle.loads(open(sys.argv[1], "rb").read())
unit = next(u for u in units if isinstance(u.payload, kind) and (kind is TextUnit or u.payload.path.endswith(".wav")))
result = process_video_unit(unit, VideoConfig(face="mediapipe"))
print(json.dumps({"failures": len(result.failures), "loaded": {m: m in sys.modules for m in ("av", "mediapipe", "opensmile")},
                  "frames": {k: len(v.values) for k, v in result.records[0].frames.items()}}))
"""


@pytest.mark.slow
def test_units_start_only_the_extractors_their_media_feeds(tmp_path: Path) -> None:
    """A build with a video, a .wav and a text-only row declares every set; planning loads no model, a worker's
    .wav unit never starts the face backend (zero face frames instead), a text-only unit neither PyAV nor
    openSMILE."""
    import os
    import subprocess
    import sys

    mf.need(mf.MOSI_CLIP, mf.TWO_SPEAKERS)
    manifest = tmp_path / "m.jsonl"
    rows = [{"video_path": str(mf.MOSI_CLIP), "segment_id": "v", "transcript": "hello", "split": "train"},
            {"video_path": str(mf.TWO_SPEAKERS), "segment_id": "w", "start": 6.6, "end": 9.0,
             "transcript": "hello hello oh hello", "split": "train"},
            {"segment_id": "t", "transcript": "What a film!", "split": "test"}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def run(script: str, *args: str) -> dict[str, Any]:
        proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    plan = run(PLAN_PROBE, str(manifest), str(tmp_path / "units.pkl"))
    assert plan["sets"][:3] == ["text_minilm", "egemaps", "face_mediapipe"]
    assert not any(plan["loaded"].values())  # planning loads no model: no torch, transformers or mediapipe
    wav = run(UNIT_PROBE, str(tmp_path / "units.pkl"), "wav")
    assert wav["failures"] == 0 and wav["frames"]["face_mediapipe"] == 0 and wav["frames"]["egemaps"] > 100
    assert not wav["loaded"]["mediapipe"]
    text = run(UNIT_PROBE, str(tmp_path / "units.pkl"), "text")
    assert text["failures"] == 0 and text["frames"] == {"egemaps": 0, "face_mediapipe": 0}
    assert text["loaded"] == {"av": False, "mediapipe": False, "opensmile": False}
