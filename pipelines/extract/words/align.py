"""Word times of a segment: pocketsphinx forced alignment of its transcript, and the fallbacks.

With a transcript: pocketsphinx forced alignment (method `forced`); words the dictionary lacks get a
pronunciation from g2p.py, so alignment never stops on an unknown word. When alignment fails, Whisper's timed
words are matched to the transcript (method `asr`), and failing that the words are spread over the speech region in proportion to their length (method `uniform`).
Without a transcript: Whisper (faster-whisper) recognises the words with their times.

Heavy models (the pocketsphinx decoder, Whisper) load once per process and stay cached. The decoder's feature
front end is rebuilt per utterance and Whisper decodes greedily, so a segment's words never depend on which
segments the process handled before (worker count, order, restarts).
"""

from __future__ import annotations

import difflib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...media import SAMPLE_RATE, to_pcm16
from ...records import Words
from ..base import SegmentMedia, importable, package_version
from ..registry import register
from .base import Aligner, Alignment, Recogniser
from .g2p import Pronouncer
from .normalise import alignment_key, is_english

_lock = threading.Lock()


@dataclass(frozen=True)
class AlignConfig:
    """How word times are found. `forced` off skips pocketsphinx; `asr_fallback` uses the build's recogniser
    (`--asr`) when forced alignment fails; `max_forced_seconds` sends longer segments straight to the fallbacks (pocketsphinx
    alignment of long audio is slow and often fails)."""

    forced: bool = True
    asr_fallback: bool = True
    max_forced_seconds: float = 90.0
    acoustic_model: str | None = None  # pocketsphinx model folder; None: the wheel's en-US model
    dictionary: str | None = None  # pronunciation dictionary; None: the wheel's cmudict



_NOISE = {"<s>", "</s>", "<sil>", "[noise]", "[speech]"}


def _forced(samples: np.ndarray, keys: list[str], originals: list[str], config: AlignConfig,
            report: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    """Times (start, end, confidence) of the alignable words, or a string saying why alignment failed."""
    with _lock:
        pron = Pronouncer.for_decoder(config, report)
        decoder = pron.decoder
        for k, o in zip(keys, originals, strict=True):
            if not pron.ensure(k, o):
                return f"word {o!r} has no pronunciation"
        try:
            # The cached decoder's feature front end keeps state from the previous utterance, which moved word
            # confidences by ~3e-4 (resetting the cepstral mean alone, or -cmn batch, does not remove it). A
            # fresh front end costs 0.03 ms (a fresh decoder ~0.3 s), and the result no longer depends on what ran before.
            decoder.reinit_feat()
            decoder.set_align_text(" ".join(keys))
            decoder.start_utt()
            decoder.process_raw(to_pcm16(samples), full_utt=True)
            decoder.end_utt()
        except RuntimeError as e:
            return f"pocketsphinx: {e}"
        segs = [(re.sub(r"\(\d+\)$", "", s.word), s.start_frame, s.end_frame, s.prob) for s in decoder.seg() or []]
    segs = [s for s in segs if s[0].lower() not in _NOISE]
    if [s[0] for s in segs] != keys:
        return f"pocketsphinx aligned {len(segs)} of {len(keys)} words"
    start = np.array([s[1] for s in segs], np.float64) / 100.0
    end = (np.array([s[2] for s in segs], np.float64) + 1.0) / 100.0
    conf = np.clip(np.array([s[3] for s in segs], np.float64), 0.0, 1.0)
    return start, end, conf


def speech_region(samples: np.ndarray, rate: int = SAMPLE_RATE, floor_db: float = -35.0) -> tuple[float, float]:
    """First and last 10 ms frame within `floor_db` of the loudest (and not digital silence); the whole
    signal when nothing qualifies."""
    hop = rate // 100
    n = len(samples) // hop
    dur = len(samples) / rate
    if n == 0:
        return 0.0, dur
    rms = np.sqrt(np.mean(samples[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    if rms.max() <= 1e-4:
        return 0.0, dur
    loud = np.flatnonzero((rms >= rms.max() * 10 ** (floor_db / 20)) & (rms > 1e-4))
    return loud[0] / 100.0, min(dur, (loud[-1] + 1) / 100.0)


def spread(words: list[str], t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    """Word intervals tiling [t0, t1] in proportion to each word's length (a guess at speaking time)."""
    if not words:
        return np.zeros(0), np.zeros(0)
    weight = np.array([len(w) + 2 for w in words], np.float64)
    edges = t0 + (t1 - t0) * np.concatenate([[0.0], np.cumsum(weight)]) / weight.sum()
    return edges[:-1], edges[1:]


def _fill_gaps(start: np.ndarray, end: np.ndarray, known: np.ndarray, words: list[str], t0: float, t1: float) -> None:
    """Spread runs of words without times over the gap between their timed neighbours (in place)."""
    i, n = 0, len(words)
    while i < n:
        if known[i]:
            i += 1
            continue
        j = i
        while j < n and not known[j]:
            j += 1
        a = end[i - 1] if i > 0 else t0
        b = start[j] if j < n else t1
        a = min(a, b)  # leading words before an early first match: squeeze them in before it
        start[i:j], end[i:j] = spread(words[i:j], a, b)
        i = j


def monotonic(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Word intervals in order and not overlapping (recognisers' word times can overlap by a few ms)."""
    start, end = np.array(start, np.float64), np.array(end, np.float64)
    for i in range(1, len(start)):
        start[i] = max(start[i], end[i - 1])
    return start, np.maximum(end, start)


def match_key(word: str) -> str:
    """How the text-to-text alignment compares words: the aligner's ASCII spelling without apostrophes
    ("película" -> "pelicula", "don't" -> "dont"); for a word with no Latin letter or digit, the word itself
    case-folded without punctuation ("Привет" -> "привет")."""
    return alignment_key(word).replace("'", "") or re.sub(r"[\W_]+", "", word.casefold())


def match_asr(words: list[str], asr: Words) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Give transcript words the times of the recognised words they match (by spelling, in order);
    (start, end, confidence, matched); unmatched words keep NaN times and confidence 0."""
    a = [match_key(w) for w in words]
    b = [match_key(w) for w in asr.words]
    start = np.full(len(words), np.nan)
    end = np.full(len(words), np.nan)
    conf = np.zeros(len(words), np.float32)
    matched = 0
    for block in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            i, j = block.a + k, block.b + k
            start[i], end[i], conf[i] = asr.start[j], asr.end[j], asr.confidence[j]
            matched += 1
    return start, end, conf, matched


Recognise = Callable[[np.ndarray], Words]  # 16 kHz samples -> recognised words, times from sample 0


def _default_recognise(samples: np.ndarray) -> Words:
    """The registry's default recogniser (the English Whisper): the fallback when the caller names none."""
    from .. import registry

    recogniser = registry.get(registry.default("asr"), "asr")
    assert isinstance(recogniser, Recogniser)
    return recogniser.recognise(samples).words


def times_from_recognised(words: list[str], recognised: Words, samples: np.ndarray,
                          rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The text-to-text alignment of a transcript with the words a recogniser heard (times from sample 0):
    the longest common subsequences of their `match_key`s (difflib) give matched transcript words the
    recognised word's times and probability; the words between two matched ones share the gap in proportion to
    their length (confidence 0), those before the first or after the last share the speech region's edge
    (`speech_region`). None when no word matches."""
    start, end, conf, matched = match_asr(words, recognised)
    if not matched:
        return None
    t0, t1 = speech_region(samples, rate)
    known = ~np.isnan(start)
    start[known], end[known] = monotonic(start[known], end[known])
    _fill_gaps(start, end, known, words, t0, t1)
    return start, end, conf


def align_transcript(samples: np.ndarray | None, words: list[str], offset: float = 0.0,
                     config: AlignConfig = AlignConfig(), recognise: Recognise | None = None,
                     rate: int = SAMPLE_RATE, duration: float | None = None, language: str = "en") -> Alignment:
    """Times for the given words in `samples` (sample 0 at `offset` seconds of the video); `recognise` is the
    fallback's recogniser (None: the registry's default).

    Without audio the words are spread over [offset, offset + duration] (method `uniform`, confidence 0).
    Unalignable words (no letters or digits) get times between their neighbours and confidence 0. A language
    other than English skips the English aligner and Whisper: the words are spread over the speech region.
    Every fallback says why in `note` (for people) and `fallback` (a code to count)."""
    report: dict[str, int] = {}
    n = len(words)
    if n == 0:
        return Alignment(Words([], [], [], [], "none"), report)
    dur = len(samples) / rate if samples is not None else (duration or 0.0)
    keys = [alignment_key(w) for w in words]
    sounded = np.array([bool(re.search(r"[a-z0-9]", k)) for k in keys])
    notes: list[str] = []
    codes: list[str] = []
    if samples is not None and len(samples) >= rate // 10 and not is_english(language):
        notes.append(f"language {language!r}: the English forced aligner and Whisper were not used; the words are "
                     "spread over the speech region")
        codes.append("language")
        t0, t1 = speech_region(samples, rate)
    elif samples is not None and len(samples) >= rate // 10:
        idx = np.flatnonzero(sounded)
        if config.forced and dur <= config.max_forced_seconds and len(idx):
            got = _forced(samples, [keys[i] for i in idx], [words[i] for i in idx], config, report)
            if not isinstance(got, str):
                start, end, conf = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n)
                start[idx], end[idx], conf[idx] = got
                _fill_gaps(start, end, sounded, words, 0.0, dur)
                return Alignment(Words(list(words), start + offset, end + offset, conf, "forced"), report)
            notes.append(got)
            codes.append("forced_failed")
            report["forced_failed"] = 1
        elif config.forced and len(idx):
            notes.append(f"segment of {dur:.1f} s is longer than max_forced_seconds={config.max_forced_seconds}")
            codes.append("too_long")
        elif config.forced:
            notes.append("no word of the transcript has letters or digits to align")
            codes.append("nothing_to_align")
        if config.asr_fallback:
            got = times_from_recognised(words, (recognise or _default_recognise)(samples), samples, rate)
            if got is not None:
                start, end, conf = got
                report["asr_fallback"] = 1
                return Alignment(Words(list(words), start + offset, end + offset, conf, "asr"), report,
                                 "; ".join(notes), "+".join(codes) or "forced_off")
            notes.append(f"Whisper matched none of {n} words")
            codes.append("asr_no_match")
        if not codes:
            notes.append("alignment is off")
            codes.append("align_off")
        t0, t1 = speech_region(samples, rate)
    else:
        t0, t1 = 0.0, dur
        notes.append("no audio" if samples is None or not len(samples) else
                     f"audio of {len(samples) / rate:.3f} s is too short to align")
        codes.append("no_audio" if samples is None or not len(samples) else "audio_too_short")
    start, end = spread(words, t0, t1)
    report["uniform_fallback"] = 1
    return Alignment(Words(list(words), start + offset, end + offset, np.zeros(n), "uniform"), report,
                     "; ".join(notes), "+".join(codes))



@register("aligner", "pocketsphinx", default=True)
class PocketsphinxAligner(Aligner):
    """pocketsphinx forced alignment of English transcripts, then the recogniser's and the uniform fallbacks
    (`align_transcript`)."""

    config_class = AlignConfig

    def availability(self) -> tuple[bool, str]:
        return importable("pocketsphinx")

    def version(self) -> str:
        return package_version("pocketsphinx")

    def load(self) -> None:
        """The process's cached decoder for this configuration (~0.3 s: the acoustic model and dictionary)."""
        from .g2p import Pronouncer

        Pronouncer.for_decoder(self.config, {})

    def align(self, media: SegmentMedia, recogniser: Recogniser | None = None) -> Alignment:
        recognise = (lambda samples: recogniser.recognise(samples).words) if recogniser is not None else None
        return align_transcript(media.audio, list(media.words), media.start, self.config, recognise,
                                duration=media.end - media.start, language=media.language)
