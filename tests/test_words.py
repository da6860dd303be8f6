"""Word times on real speech: forced alignment, unknown words, ASR, and the fallbacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import PipelineError
from pipelines.extract.words.align import AlignConfig, align_transcript, match_asr, speech_region, spread
from pipelines.extract.words.asr import AsrConfig, transcribe
from pipelines.extract.words.g2p import PHONES, Pronouncer, letter_to_sound
from pipelines.extract.words.normalise import alignment_key, number_words, transcript_words, written_words
from pipelines.media import cut, read_audio
from tests import media_fixtures as mf


@pytest.fixture(scope="module")
def mosi_audio() -> np.ndarray:
    mf.need(mf.MOSI_CLIP, mf.MOSI_LABELS)
    return read_audio(mf.MOSI_CLIP)


@pytest.fixture(scope="module")
def mosi_asr(mosi_audio: np.ndarray):
    return transcribe(mosi_audio)


def test_transcript_words() -> None:
    assert transcript_words("Okay, then I thought you know, I heard a beep.") == \
        ["Okay", "then", "I", "thought", "you", "know", "I", "heard", "a", "beep"]
    assert transcript_words("You must\u2019ve had -- your hands full\u2026 & more") == \
        ["You", "must've", "had", "your", "hands", "full", "and", "more"]
    assert transcript_words("KL-5 to GR-6, \"quoted\" (aside)") == ["KL-5", "to", "GR-6", "quoted", "aside"]
    assert transcript_words("") == [] and transcript_words(None) == [] and transcript_words(" ... - ") == []
    assert alignment_key("Caf\u00e9's") == "cafe's" and alignment_key("\u2018Cause") == "cause"


def test_written_words_keep_each_words_punctuation() -> None:
    text = "... Oh, really ?! You must\u2019ve had -- your hands full\u2026 & more."
    assert written_words(text) == ["... Oh,", "really ?!", "You", "must've", "had --", "your", "hands", "full\u2026",
                                   "&", "more."]
    assert len(written_words(text)) == len(transcript_words(text))
    assert written_words("") == [] and written_words(None) == [] and written_words(" ... - ") == []
    # words that are not this transcript's (Whisper's, say) are encoded as they are
    assert written_words("Hello there!", ["hello", "there"]) == ["hello", "there"]
    assert written_words("Hello there!", ["Hello", "there"]) == ["Hello", "there!"]


def test_numbers_and_letter_to_sound() -> None:
    assert number_words(1997) == ["nineteen", "ninety", "seven"]
    assert number_words(2011) == ["twenty", "eleven"]
    assert number_words(2005) == ["two", "thousand", "five"]
    assert number_words(127) == ["one", "hundred", "twenty", "seven"]
    assert number_words(1905) == ["nineteen", "oh", "five"]
    for word in ("blorptastic", "schmoopie", "zyxw", "qqq", "idiosyncratically", "e", "x"):
        phones = letter_to_sound(word).split()
        assert phones and set(phones) <= PHONES, word
    assert letter_to_sound("make") == "M EY K" and letter_to_sound("ship") == "SH IH P"


def test_pronouncer_covers_unknown_words() -> None:
    pron = Pronouncer.for_decoder(AlignConfig(), {})
    cases = {"didnt": "contraction", "thats": "contraction", "KL-5": "parts", "1997": "number", "80s": "number",
             "3d": "number", "blorptastic": "rules", "NASAX": "acronym", "zorbings": "rules"}
    for word, how in cases.items():
        phones, source = pron.phones(alignment_key(word), word)
        assert source == how, (word, source)
        assert phones and set(phones.split()) <= PHONES, word
    assert pron.phones(alignment_key("--"))[0] is None


def test_forced_alignment_of_real_clip(mosi_audio: np.ndarray) -> None:
    words = transcript_words(mf.mosi_transcript())
    al = align_transcript(mosi_audio, words, offset=0.0)
    w = al.words
    clip_end = len(mosi_audio) / 16000
    assert w.method == "forced" and w.words == words
    assert np.isfinite(w.start).all() and np.isfinite(w.end).all()
    assert (w.start >= 0).all() and (w.end <= clip_end + 1e-6).all() and (w.end > w.start).all()
    assert (np.diff(w.start) > 0).all() and (w.start[1:] >= w.end[:-1] - 1e-9).all()  # in order
    assert ((w.confidence >= 0) & (w.confidence <= 1)).all() and w.confidence.mean() > 0.7
    assert al.report.get("suffix", 0) + al.report.get("rules", 0) >= 1  # "failer" is not in cmudict
    # an offset moves every time by the segment's start
    shifted = align_transcript(mosi_audio, words, offset=10.0).words
    assert np.allclose(shifted.start, w.start + 10.0)


def test_alignment_does_not_depend_on_what_the_decoder_aligned_before(mosi_audio: np.ndarray) -> None:
    """The cached decoder once carried front-end state over: the same clip's confidences moved by ~3e-4
    depending on the segment aligned before it (the first segment of each worker differed)."""
    mf.need(mf.TWO_SPEAKERS, mf.TWO_SPEAKERS_STM)
    from pipelines.extract.words.g2p import _decoder

    words = transcript_words(mf.mosi_transcript())
    config = AlignConfig(asr_fallback=False)
    _decoder.cache_clear()  # what a fresh worker process sees
    fresh = align_transcript(mosi_audio, words, config=config).words
    other = read_audio(mf.TWO_SPEAKERS)
    for start, end, text in mf.stm_utterances()[:3]:  # other speech in between
        align_transcript(cut(other, start, end), transcript_words(text), config=config)
        again = align_transcript(mosi_audio, words, config=config).words
        assert again.method == fresh.method == "forced"
        assert np.array_equal(again.confidence, fresh.confidence), np.abs(again.confidence - fresh.confidence).max()
        assert np.array_equal(again.start, fresh.start) and np.array_equal(again.end, fresh.end)


def test_out_of_dictionary_transcript_aligns_without_crash(mosi_audio: np.ndarray) -> None:
    words = transcript_words("zorbleflax quintaplume vexillocrat snarfblat 1997 KL-5 grumbotic wibblywob")
    al = align_transcript(mosi_audio, words)
    assert al.words.words == words and al.words.method in ("forced", "asr", "uniform")
    assert np.isfinite(al.words.start).all() and (np.diff(al.words.start) >= 0).all()
    assert al.report.get("rules", 0) >= 5


def test_stm_utterances_align_within_their_times() -> None:
    mf.need(mf.TWO_SPEAKERS, mf.TWO_SPEAKERS_STM)
    audio = read_audio(mf.TWO_SPEAKERS)
    methods = []
    for start, end, text in mf.stm_utterances():
        words = transcript_words(text)
        al = align_transcript(cut(audio, start, end), words, offset=start)
        methods.append(al.words.method)
        assert al.words.words == words
        assert (al.words.start >= start - 0.3).all() and (al.words.end <= end + 0.3).all(), text
        assert (np.diff(al.words.start) >= 0).all()
    assert methods.count("forced") >= len(methods) - 2 and "uniform" not in methods


def test_asr_words_have_times(mosi_audio: np.ndarray, mosi_asr) -> None:
    lower = [x.lower() for x in mosi_asr.words.words]
    assert mosi_asr.words.method == "asr" and {"sucker", "punch", "ambitious", "idiosyncratic"} <= set(lower)
    assert (mosi_asr.words.start >= 0).all() and (mosi_asr.words.end <= len(mosi_audio) / 16000 + 0.1).all()
    assert "sucker punch" in mosi_asr.text.lower()


def test_recognition_does_not_depend_on_what_was_recognised_before(mosi_audio: np.ndarray, mosi_asr) -> None:
    mf.need(mf.TWO_SPEAKERS)
    assert AsrConfig().temperatures == (0.0,)  # no sampled re-decoding: its generator is per thread, not per call
    transcribe(cut(read_audio(mf.TWO_SPEAKERS), 0.0, 8.0))
    again = transcribe(mosi_audio).words
    assert again.words == mosi_asr.words.words
    assert np.array_equal(again.start, mosi_asr.words.start) and np.array_equal(again.confidence, mosi_asr.words.confidence)


def test_asr_fallback_and_matching(mosi_audio: np.ndarray, mosi_asr) -> None:
    words = transcript_words(mf.mosi_transcript())
    start, end, conf, matched = match_asr(words, mosi_asr.words)
    assert matched >= len(words) - 3  # the transcript writes "failer" and an extra "the"
    assert np.isnan(start[words.index("failer")]) and conf[words.index("failer")] == 0
    al = align_transcript(mosi_audio, words, offset=1.0, config=AlignConfig(forced=False))
    assert al.words.method == "asr" and np.isfinite(al.words.start).all()
    assert (np.diff(al.words.start) >= 0).all() and al.words.start[0] >= 1.0


def test_forced_failure_falls_back() -> None:
    mf.need(mf.TWO_SPEAKERS)
    # 0.6 s of one speaker saying "Hello?" cannot hold this sentence: alignment fails, ASR matches nothing
    audio = cut(read_audio(mf.TWO_SPEAKERS), 6.6, 7.2)
    words = transcript_words("twenty seven uncorrelated syllables of elaborate verbiage here " * 4)
    al = align_transcript(audio, words, offset=6.6)
    assert al.words.method in ("asr", "uniform") and al.note
    if al.words.method == "uniform":
        assert (al.words.confidence == 0).all()
    assert (al.words.start >= 6.6).all() and (al.words.end <= 7.2 + 1e-6).all()


def test_uniform_without_audio_and_helpers() -> None:
    al = align_transcript(None, ["a", "longer", "word"], offset=5.0, duration=2.0)
    assert al.words.method == "uniform" and al.words.start[0] == 5.0 and al.words.end[-1] == pytest.approx(7.0)
    assert (al.words.confidence == 0).all()
    s, e = spread(["ab", "abcd"], 0.0, 10.0)
    assert s.tolist() == [0.0, 4.0] and e.tolist() == [4.0, 10.0]
    empty = align_transcript(np.zeros(16000, np.float32), [])
    assert empty.words.words == [] and empty.words.method == "none"
    tone = np.zeros(32000, np.float32)
    tone[8000:16000] = 0.5 * np.sin(np.arange(8000) * 0.3)
    assert speech_region(tone) == pytest.approx((0.5, 1.0), abs=0.02)


def test_missing_asr_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="does not exist"):
        transcribe(np.zeros(16000, np.float32), config=AsrConfig(model_path=str(tmp_path / "nowhere")))
    with pytest.raises(PipelineError, match="not a CTranslate2 Whisper model"):
        transcribe(np.zeros(16000, np.float32), config=AsrConfig(model_path=str(tmp_path)))
