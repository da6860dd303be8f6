"""MELD's `*_sent_emo.csv` (one file per split) as text-only segments with sentiment and emotion classes, read by
the videos recipe (`mmolre build videos --input meld/dev_sent_emo.csv --split valid`)."""

from __future__ import annotations

from pathlib import Path

from ..inputs import (
    ParsedInputs,
    RowError,
    SegmentSpec,
    check_labels,
    check_split,
    require_input,
    text_value,
)
from .label_table import RowId, read_label_table

COLUMNS = ("Utterance", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")


def read_meld(path: str | Path, split: str) -> ParsedInputs:
    """MELD's `*_sent_emo.csv` as text-only segments of one split; ids `<split>_dia<D>_utt<U>` (MELD reuses
    dialogue numbers across its splits), video id `<split>_dia<D>`."""
    path = require_input(path, "MELD file")
    split = check_split(split)

    def segment(r: dict, rid: RowId) -> SegmentSpec:
        try:
            dia = int(str(r.get("Dialogue_ID")).strip())
            utt = int(str(r.get("Utterance_ID")).strip())
            rid.segment = f"{split}_dia{dia}_utt{utt}"
            labels = check_labels({"sentiment_class": r.get("Sentiment"), "emotion": r.get("Emotion")})
        except RowError:
            raise
        except ValueError as e:  # a dialogue or utterance number that is not one
            raise RowError(str(e)) from None
        return SegmentSpec(rid.segment, f"{split}_dia{dia}", None, None, None, text_value(r.get("Utterance")),
                           labels, split, "meld", str(path))

    return read_label_table(path, COLUMNS, "meld", segment)
