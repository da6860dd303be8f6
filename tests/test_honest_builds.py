"""Honest builds: leakage between splits is reported, only producible feature sets are declared, alignment
fallbacks and non-English rows say why, and a build that wrote nothing exits 4."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from feature_schemas import Store, coverage_column, validate
from flows.cli import main as cli_main
from pipelines.extract.words.align import align_transcript
from pipelines.leakage import find_leakage, normalise_transcript
from pipelines.media import read_audio
from pipelines.recipes.videos import VideoConfig, build_videos, video_units
from tests import media_fixtures as mf

REPO = Path(__file__).resolve().parents[1]


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> Path:
    fields = sorted({k for r in rows for k in r})
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


# -- leakage ------------------------------------------------------------------------------------------
def test_normalised_transcripts() -> None:
    assert normalise_transcript("  I REALLY loved   it, didn't I?! ") == "i really loved it didnt i"
    assert normalise_transcript(None) == "" and normalise_transcript("...") == ""


def test_leakage_needs_four_words_and_two_splits() -> None:
    rows = [
        {"segment_id": "a1", "video_id": "a", "split": "train", "transcript": "The plot was okay, really."},
        {"segment_id": "b1", "video_id": "b", "split": "test", "transcript": "the plot was OKAY really"},
        {"segment_id": "a2", "video_id": "a", "split": "train", "transcript": "oh really wow"},
        {"segment_id": "c1", "video_id": "c", "split": "test", "transcript": "Oh, really wow!"},  # 3 words: chance
        {"segment_id": "a3", "video_id": "a", "split": "train", "transcript": "same split twice is fine"},
        {"segment_id": "a4", "video_id": "a", "split": "train", "transcript": "same split twice is fine"},
        {"segment_id": "d1", "video_id": "d", "split": "train", "transcript": "one video in two splits here"},
        {"segment_id": "d2", "video_id": "d", "split": "valid", "transcript": "and another sentence of it"},
    ]
    report = find_leakage(rows)
    t, v = report["transcripts_in_several_splits"], report["videos_in_several_splits"]
    assert t["count"] == 1 and t["segments"] == 2 and t["segments_by_split"] == {"train": 1, "test": 1}
    assert t["examples"] == [{"transcript": "the plot was okay really", "segments": {"train": ["a1"], "test": ["b1"]}}]
    assert v["count"] == 1 and v["examples"] == [{"video_id": "d", "segments": {"train": 1, "valid": 1}}]
    clean = find_leakage(r for r in rows if r["segment_id"] not in ("b1", "d2"))
    assert clean["transcripts_in_several_splits"]["count"] == 0 and clean["videos_in_several_splits"]["count"] == 0


@pytest.fixture(scope="module")
def leaky_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text-only manifest (real MiniLM) whose test split repeats a training sentence and a training video."""
    d = tmp_path_factory.mktemp("leaky")
    rows = [
        {"segment_id": "tr1", "video_id": "v1", "transcript": "I really loved this movie!", "sentiment": 2.5, "split": "train"},
        {"segment_id": "tr2", "video_id": "v2", "transcript": "oh really wow", "sentiment": 0.5, "split": "train"},
        {"segment_id": "tr3", "video_id": "v3", "transcript": "the ending was a boring mess", "sentiment": -2, "split": "train"},
        {"segment_id": "te1", "video_id": "v4", "transcript": "i really LOVED this movie", "sentiment": 2.5, "split": "test"},
        {"segment_id": "te2", "video_id": "v5", "transcript": "Oh, really wow?", "sentiment": 0.5, "split": "test"},
        {"segment_id": "va1", "video_id": "v3", "transcript": "a new sentence in valid only", "sentiment": 1, "split": "valid"},
    ]
    manifest = write_manifest(d / "leaky.csv", rows)
    build_videos(manifest, d / "store", VideoConfig(face=None), progress=False)
    return d / "store"


def test_leakage_in_manifest_report_and_card(leaky_store: Path) -> None:
    store = Store(leaky_store)
    assert validate(store.path).ok
    leak = store.manifest.report["leakage"]
    t = leak["transcripts_in_several_splits"]
    assert t["count"] == 1 and t["examples"][0]["segments"] == {"train": ["tr1"], "test": ["te1"]}
    assert leak["videos_in_several_splits"]["examples"] == [{"video_id": "v3", "segments": {"train": 1, "valid": 1}}]
    assert any(w.startswith("leakage: 1 transcripts") for w in store.manifest.report["warnings"])
    card = (leaky_store / "README.md").read_text()
    assert "## Leakage between splits" in card and "'i really loved this movie': train tr1; test te1" in card
    assert "'v3': train 1, valid 1" in card


def test_leakage_in_inspect(leaky_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["inspect", "--json", str(leaky_store)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["report"]["leakage"]["transcripts_in_several_splits"]["segments_by_split"] == {"train": 1, "test": 1}
    assert cli_main(["inspect", str(leaky_store)]) == 0
    out = capsys.readouterr().out
    assert "leakage: 1 transcripts of 4+ words occur in more than one split (2 segments: train 1, test 1)" in out
    assert "leakage: 1 video ids occur in more than one split" in out


# -- feature sets the inputs can produce ---------------------------------------------------------------
def test_text_only_manifest_makes_a_text_only_store(leaky_store: Path) -> None:
    store = Store(leaky_store)
    assert store.aligned_sets() == ["text_minilm"]  # word level: no audio or face set
    assert set(store.feature_sets) == {"text_minilm", "text_minilm_sentence"}  # + its utterance-level sentence vector
    seg = store.segment("va1")
    assert (seg[coverage_column("text_minilm")] == 1).all()


def test_audio_only_inputs_declare_no_face_set(tmp_path: Path) -> None:
    mf.need(mf.TWO_SPEAKERS)
    manifest = write_manifest(tmp_path / "m.csv", [
        {"video_path": str(mf.TWO_SPEAKERS), "segment_id": "u1", "start": 0.5, "end": 3.0, "transcript": "hello there"},
        {"segment_id": "t1", "transcript": "a text only row"}])
    _, sets, _ = video_units(manifest, VideoConfig(face="dlib"))
    assert [fs.name for fs in sets] == ["text_minilm", "egemaps", "text_minilm_sentence", "egemaps_functionals"]


# -- alignment fallbacks and languages ------------------------------------------------------------------
def test_fallback_reasons_from_the_aligner() -> None:
    mf.need(mf.MOSI_CLIP)
    audio = read_audio(mf.MOSI_CLIP)
    spanish = align_transcript(audio, "esto es una prueba de verdad".split(), language="es")
    assert spanish.words.method == "uniform" and spanish.fallback == "language" and "'es'" in spanish.note
    assert (spanish.words.confidence == 0).all() and np.all(np.diff(spanish.words.start) > 0)
    silent = align_transcript(None, ["a", "word"], offset=1.0, duration=2.0)
    assert silent.words.method == "uniform" and silent.fallback == "no_audio" and silent.note == "no audio"


def test_most_segments_uniform_warns_with_reasons(tmp_path: Path) -> None:
    mf.need(mf.FACE_CLIP)
    video = mf.without_audio(tmp_path)
    manifest = write_manifest(tmp_path / "m.csv", [
        {"video_path": video.name, "segment_id": f"q{i}", "transcript": "hello there how are you", "split": "train"}
        for i in range(2)])
    build_videos(manifest, tmp_path / "s", VideoConfig(face=None), progress=False)
    report = Store(tmp_path / "s").manifest.report
    assert report["counters"]["align_fallback.uniform.no_audio"] == 2
    assert [(n["item_id"], n["note"]) for n in report["notes"]] == [("q0", "uniform: no audio"), ("q1", "uniform: no audio")]
    assert any(w.startswith("2 of 2 segments have uniformly spaced word times") and "no_audio 2" in w
               for w in report["warnings"])
    assert "2 of 2 segments have uniformly spaced word times" in (tmp_path / "s" / "README.md").read_text()


def test_non_english_rows_skip_the_english_aligner_and_encoder(tmp_path: Path) -> None:
    mf.need(mf.MOSI_CLIP, mf.MOSI_LABELS)
    manifest = write_manifest(tmp_path / "m.csv", [
        {"video_path": str(mf.MOSI_CLIP), "segment_id": "en", "transcript": mf.mosi_transcript(), "split": "train"},
        {"video_path": str(mf.MOSI_CLIP), "segment_id": "es", "transcript": "esto es una prueba de la alineación",
         "language": "es", "split": "train"},
        {"segment_id": "es_text", "transcript": "una frase sin video", "language": "ES", "split": "test"},
        {"segment_id": "bad_lang", "transcript": "some words", "language": "english please", "split": "test"},
    ])
    result = build_videos(manifest, tmp_path / "s", VideoConfig(face=None), progress=False)
    store = Store(tmp_path / "s")
    assert validate(store.path).ok and result.n_segments == 2
    en, es = store.segment("en"), store.segment("es")
    assert (en[coverage_column("text_minilm")] == 1).all() and (es[coverage_column("text_minilm")] == 0).all()
    assert not es["text_minilm"].any() and (es[coverage_column("egemaps")] > 0).any()
    methods = {r["segment_id"]: r["align_method"] for r in store.aligned("train", columns=["segment_id", "align_method"]).to_pylist()}
    assert methods == {"en": "forced", "es": "asr"}  # Spanish: the multilingual recogniser's words, matched
    assert {r["segment_id"]: r["language"] for r in store.segments().to_pylist()} == {"en": "en", "es": "es"}
    report = store.manifest.report
    c = report["counters"]
    assert c["text.skipped_not_english"] == 1 and not any(k.startswith("align_fallback.") for k in c)
    assert c["segments.language.es"] == 2 and report["languages_planned"] == {"en": 1, "es": 2}
    notes = {(n["item_id"], n["stage"]): n["note"] for n in report["notes"]}
    assert ("es", "align") not in notes and "coverage 0" in notes[("es", "text")]
    failures = {f["item_id"]: f for f in store.failures().to_pylist()}
    assert "English only" in failures["es_text"]["reason"] and failures["es_text"]["stage"] == "text"
    assert "is not a language code" in failures["bad_lang"]["reason"]


# -- a build that wrote nothing -------------------------------------------------------------------------
def test_zero_segment_build_exits_4_with_reasons(tmp_path: Path) -> None:
    rows = [{"video_path": f"missing_{i}.mp4", "segment_id": f"m{i}", "transcript": "words", "split": "train"}
            for i in range(3)]
    rows += [{"segment_id": f"es{i}", "transcript": "hola a todos", "language": "es", "split": "test"} for i in range(2)]
    rows += [{"segment_id": "loud", "transcript": "too positive", "sentiment": 9, "split": "test"}]
    manifest = write_manifest(tmp_path / "bad.csv", rows)
    cmd = [sys.executable, "-m", "flows.cli", "build", "videos", "--input", str(manifest), "--out", str(tmp_path / "s"),
           "--face", "none", "--workers", "0", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 4, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    head = next(i for i, line in enumerate(lines) if "the build wrote no segment (6 failures)" in line)
    reasons = lines[head + 1: head + 4]
    assert reasons[0].startswith("  3 x [read]") and "does not exist" in reasons[0]
    assert reasons[1].startswith("  2 x [text]") and "English only" in reasons[1]
    assert reasons[2].startswith("  1 x [read]") and "sentiment" in reasons[2]
    assert Store(tmp_path / "s").manifest.report["segments"] == 0


# -- the demo corpus ------------------------------------------------------------------------------------
def test_demo_corpus_has_no_sentence_or_face_clip_in_two_splits() -> None:
    from flows.demo_corpus import SENTENCES, VIDEOS, corpus_segments

    segments = corpus_segments()
    leak = find_leakage(segments, min_words=1)  # stricter than the build's check: any shared sentence counts
    assert leak["transcripts_in_several_splits"]["count"] == 0 and leak["videos_in_several_splits"]["count"] == 0
    clips: dict[str, set[str]] = {}
    for v in VIDEOS:
        clips.setdefault(v.source, set()).add(v.split)
    assert all(len(splits) == 1 for splits in clips.values()), clips
    assert len({normalise_transcript(t) for t, _, _ in SENTENCES}) == len(SENTENCES)
    sizes = {s: sum(x["split"] == s for x in segments) for s in ("train", "valid", "test")}
    assert sizes == {"train": 20, "valid": 4, "test": 8}
    for split in ("valid", "test"):  # each held-out split has both signs of sentiment to score
        labels = [SENTENCES[i][1] for v in VIDEOS if v.split == split for i in v.sentences]
        assert min(labels) < 0 < max(labels)


def test_pipeline_report_states_split_sizes_and_small_test_sets(leaky_store: Path) -> None:
    from flows.summary import summarize_build
    from flows.video_to_model import honesty_lines
    from pipelines.store_writer import BuildResult

    store = Store(leaky_store)
    result = BuildResult(store.path, store.manifest, 0, 1, store.manifest.report["segments"], 0)
    text = "\n".join(honesty_lines(summarize_build(result)))
    assert "Split sizes: train 3, valid 1, test 2." in text
    assert "leakage: 1 transcripts" in text and "proves only that the pipeline runs" in text
