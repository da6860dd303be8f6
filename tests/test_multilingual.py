"""Any language: the packaged multilingual Whisper (joined from two PyPI packages), the text-to-text alignment of
a transcript with what it heard, and a build of German and Spanish speech (synthesised with eSpeak NG) whose
word times are recognised and whose language is stored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from feature_schemas import Store, sha256_file, validate
from pipelines.extract import registry
from pipelines.extract.words.align import times_from_recognised
from pipelines.records import Words
from tests import media_fixtures as mf

GERMAN = "Der Film war wirklich gut, aber das Ende hat mir nicht gefallen."
SPANISH = "La película fue muy buena, pero el final no me gustó nada."


def speech_wav(path: Path, text: str, voice: str) -> Path:
    """eSpeak NG's speech of `text` as a 16 kHz wav (espeakng-loader's library and voices: no system package)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    from flows.speech_synth import synthesize

    samples, rate = synthesize(text, voice, 140)
    sf.write(path, resample_poly(samples, 320, 441).astype(np.float32) if rate == 22050 else samples, 16000)
    return path


def test_the_packaged_model_is_joined_once_and_checked() -> None:
    from pipelines.extract.words import whisper_base as wb

    folder = wb.packaged_model()
    model = folder / "model.bin"
    assert model.stat().st_size == wb.SIZE and sha256_file(model) == wb.SHA256
    assert json.loads((folder / "config.json").read_text())["lang_ids"]  # the multilingual vocabulary's languages
    assert wb.packaged_model() == folder  # reused, not joined again
    assert registry.default("asr", "multilingual") == "whisper-base" and registry.info("whisper-base").available


def test_a_fresh_cache_is_joined_whole_and_a_lost_side_file_restored(tmp_path, monkeypatch) -> None:
    """The join itself (the test above may find it done): model.bin checked, side files in place, no temporary
    file left; a side file lost later comes back without joining the model again."""
    from pipelines.extract.words import whisper_base as wb

    monkeypatch.setenv("MMOLRE_CACHE", str(tmp_path))
    folder = wb.packaged_model()
    assert folder.parent == tmp_path and sha256_file(folder / "model.bin") == wb.SHA256
    assert sorted(p.name for p in folder.iterdir()) == sorted([".lock", "model.bin", *wb.SIDE_FILES])
    joined_at = (folder / "model.bin").stat().st_mtime_ns
    (folder / "vocabulary.txt").unlink()
    assert wb.packaged_model() == folder and (folder / "vocabulary.txt").stat().st_size > 0
    assert (folder / "model.bin").stat().st_mtime_ns == joined_at and not list(folder.glob("*.tmp"))


def test_text_to_text_alignment_matches_accents_and_fills_gaps() -> None:
    """Recognised "pelicura" misses "película"; the words around it match (accents folded) and it shares the gap."""
    heard = Words(["La", "pelicura", "fue", "muy", "buena"], [0.0, 0.14, 0.68, 0.96, 1.28], [0.14, 0.68, 0.96, 1.28, 1.68],
                  [0.3, 0.6, 0.99, 0.99, 0.5], "asr")
    words = ["la", "película", "fue", "muy", "buena", "pero"]
    got = times_from_recognised(words, heard, np.full(32000, 0.1, np.float32))
    assert got is not None
    start, end, conf = got
    assert start.tolist()[:1] + start.tolist()[2:5] == [0.0, 0.68, 0.96, 1.28] and conf[1] == 0 and conf[2] > 0
    assert start[1] == pytest.approx(0.14) and end[1] == pytest.approx(0.68)  # the gap between its neighbours
    assert end[-1] == pytest.approx(2.0) and (np.diff(start) >= 0).all()  # the last word runs to the speech's end
    assert times_from_recognised(["nada"], heard, np.zeros(16000, np.float32)) is None


@pytest.fixture(scope="module")
def other_languages(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """German with its transcript (language de), Spanish without one (language und: detected)."""
    from pipelines.recipes.videos import VideoConfig, build_videos

    folder = tmp_path_factory.mktemp("languages")
    rows = [{"video_path": str(speech_wav(folder / "de.wav", GERMAN, "de")), "segment_id": "de", "transcript": GERMAN,
             "language": "de", "split": "train"},
            {"video_path": str(speech_wav(folder / "es.wav", SPANISH, "es")), "segment_id": "es", "language": "und",
             "split": "train"}]
    (folder / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_videos(folder / "m.jsonl", folder / "store", VideoConfig(face=None), progress=False)
    return Store(folder / "store")


def test_german_and_spanish_build_with_recognised_word_times(other_languages: Store) -> None:
    store = other_languages
    assert validate(store.path).ok and store.manifest.schema_version == "2.2"
    segments = {r["segment_id"]: r for r in store.segments().to_pylist()}
    assert segments["de"]["language"] == "de" and segments["de"]["language_probability"] is None  # given
    assert segments["es"]["language"] == "es" and segments["es"]["language_probability"] > 0.5  # detected
    assert "buena" in segments["es"]["transcript"].lower()
    aligned = {r["segment_id"]: r for r in store.aligned("train").to_pylist()}
    de = aligned["de"]
    assert de["align_method"] == "asr" and de["words"][:3] == ["Der", "Film", "war"]
    assert sum(c > 0 for c in de["word_confidence"]) >= len(de["words"]) - 2  # matched to recognised words
    lengths = np.array(de["word_end"]) - np.array(de["word_start"])
    assert (np.diff(de["word_start"]) >= 0).all() and lengths.std() > 0.02  # not spread in proportion to length
    assert de["word_start"][0] < 0.3 and 3.3 < de["word_end"][-1] < 4.1
    assert aligned["es"]["align_method"] == "asr"


def test_word_times_and_languages_in_the_report_and_card(other_languages: Store) -> None:
    from pipelines.card import word_times

    counts = word_times(store_report := other_languages.manifest.report)
    assert counts["segments"] == {"asr": 2} and counts["fallbacks"] == 0 and counts["languages"] == {"de": 1, "es": 1}
    assert store_report["counters"]["align.recognised_matched"] >= 10
    card = (other_languages.path / "README.md").read_text()
    assert "## Word times" in card and "| asr | 2 |" in card and "de 1, es 1" in card


def test_a_transcript_the_recogniser_cannot_match_says_why(tmp_path: Path) -> None:
    """English speech given a German transcript: nothing matches, so the words are spread, and the note says why."""
    mf.need(mf.TWO_SPEAKERS)
    from pipelines.extract.base import SegmentMedia
    from pipelines.media import cut, read_audio

    audio = cut(read_audio(mf.TWO_SPEAKERS), 0.0, 3.0)
    aligner, recogniser = registry.get("recognised", "aligner"), registry.get("whisper-base", "asr")
    al = aligner.align(SegmentMedia("x", 5.0, 8.0, None, audio, words=("Zwölf", "Boxkämpfer", "jagen"), language="de"),
                       recogniser)
    assert al.words.method == "uniform" and al.fallback == "asr_no_match" and "Whisper base matched none of 3" in al.note
    assert (al.words.start >= 5.0).all() and (al.words.end <= 8.0 + 1e-6).all() and (al.words.confidence == 0).all()
