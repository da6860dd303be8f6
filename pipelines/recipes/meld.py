"""MELD's `*_sent_emo.csv` (one file per split) as text-only segments with sentiment and emotion classes, read by
the videos recipe (`mmolre build videos --input meld/dev_sent_emo.csv --split valid`)."""

from __future__ import annotations

from pathlib import Path

from ..inputs import (
    ParsedInputs,
    RowError,
    SegmentSpec,
    check_labels,
    check_row,
    check_split,
    need_columns,
    read_rows,
    require_input,
    row_failure,
    text_value,
    unique_specs,
)


def read_meld(path: str | Path, split: str) -> ParsedInputs:
    """MELD's `*_sent_emo.csv` as text-only segments of one split; ids `<split>_dia<D>_utt<U>` (MELD reuses
    dialogue numbers across its splits), video id `<split>_dia<D>`."""
    path = require_input(path, "MELD file")
    split = check_split(split)
    rows = read_rows(path)
    need_columns(path, rows, ("Utterance", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID"))
    out = ParsedInputs(source="meld", path=str(path))
    for n, r in enumerate(rows, start=2):
        sid = None
        try:
            check_row(r)
            dia = int(str(r.get("Dialogue_ID")).strip())
            utt = int(str(r.get("Utterance_ID")).strip())
            sid = f"{split}_dia{dia}_utt{utt}"
            labels = check_labels({"sentiment_class": r.get("Sentiment"), "emotion": r.get("Emotion")})
            out.specs.append(SegmentSpec(sid, f"{split}_dia{dia}", None, None, None, text_value(r.get("Utterance")),
                                         labels, split, "meld", str(path)))
        except (RowError, ValueError) as e:
            out.failures.append(row_failure(path, n, sid, e))
    return unique_specs(out)
