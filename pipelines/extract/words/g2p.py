"""Pronunciations for any word: the pocketsphinx dictionary first, then the word's parts (contractions without
their apostrophe, hyphenated parts, numbers, stems plus suffixes, spelled acronyms), then letter-to-sound rules,
so forced alignment never stops on an unknown word. The decoder is cached per process with the words it learnt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ...media import SAMPLE_RATE
from .normalise import number_words

if TYPE_CHECKING:
    from pocketsphinx import Decoder

    from .align import AlignConfig

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

    decoder: Decoder
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
            spoken = number_words(int(m.group(1))) if len(m.group(1)) < 10 else [number_words(int(d))[0] for d in m.group(1)]
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




@lru_cache(maxsize=4)
def _decoder(hmm: str | None, dictionary: str | None) -> tuple[Decoder, dict[str, str]]:
    """The decoder, and the words added to its dictionary (word -> how it was pronounced), which live with it."""
    from pocketsphinx import Decoder

    kwargs: dict[str, Any] = {"samprate": SAMPLE_RATE, "loglevel": "FATAL"}
    if hmm:
        kwargs["hmm"] = hmm
    if dictionary:
        kwargs["dict"] = dictionary
    return Decoder(**kwargs), {}
