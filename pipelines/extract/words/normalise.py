"""A transcript's words as the store keeps them, as the text encoder reads them, and as the aligner's
dictionary spells them; English number words; whether a language tag means English.
"""

from __future__ import annotations

import re
import unicodedata

QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'", "\u2013": "-", "\u2014": "-"})


def strip_punct(token: str) -> str:
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
    text = unicodedata.normalize("NFC", text).translate(QUOTES)
    return [("and" if tok == "&" else strip_punct(tok), tok) for tok in text.split()]


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
    w = unicodedata.normalize("NFKD", word.translate(QUOTES)).encode("ascii", "ignore").decode().lower()
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



def is_english(language: str | None) -> bool:
    """True for "en", "en-US", "eng" and no language at all (the default)."""
    return not language or language.lower().replace("_", "-").split("-")[0] in ("en", "eng")
