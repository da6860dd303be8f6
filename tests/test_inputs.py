"""Input discovery: MMSA layout, manifests (CSV/JSONL), single videos, MOSI and MELD label files; row problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.errors import PipelineError
from pipelines.inputs import check_id, read_manifest, read_video
from pipelines.recipes.meld import read_meld
from pipelines.recipes.mmsa_fet import read_mmsa_fet
from pipelines.recipes.mosi_text import read_mosi_labels
from pipelines.recipes.videos import discover_inputs
from tests.media_fixtures import MELD_DIR, MOSI_CLIP, MOSI_ID, MOSI_LABELS, mosi_transcript, need


def write_csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture()
def mmsa_root(tmp_path: Path) -> Path:
    """An MMSA-FET folder whose one clip links to the real MOSI clip, plus a row whose clip is missing."""
    need(MOSI_CLIP, MOSI_LABELS)
    raw = tmp_path / "Raw" / "Oz06ZWiO20M"
    raw.mkdir(parents=True)
    (raw / "6.mp4").symlink_to(MOSI_CLIP)
    write_csv(tmp_path / "label.csv", "video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode",
              f"Oz06ZWiO20M,6,{mosi_transcript()},-0.8,-1.0,-0.6,0.0,Negative,train",
              "Oz06ZWiO20M,7,a clip that is not there,0.4,0.2,0.2,0.2,Positive,valid",
              "Oz06ZWiO20M,8,a label out of range,4.5,0,0,0,Positive,test",
              "Oz06ZWiO20M,9,an unknown split,0.0,0,0,0,Neutral,holdout")
    return tmp_path


def test_mmsa_layout(mmsa_root: Path) -> None:
    parsed = read_mmsa_fet(mmsa_root)
    assert [s.segment_id for s in parsed.specs] == [MOSI_ID]
    spec = parsed.specs[0]
    assert spec.video_path == mmsa_root / "Raw" / "Oz06ZWiO20M" / "6.mp4" and spec.video_path.is_file()
    assert spec.labels["sentiment"] == pytest.approx(-0.8) and spec.labels["sentiment_class"] == "negative"
    assert spec.extra == {"label_T": -1.0, "label_A": -0.6, "label_V": 0.0}
    assert spec.split == "train" and spec.transcript.startswith("and sucker punch")
    reasons = {f.item_id: f.reason for f in parsed.failures}
    assert "does not exist" in reasons["Oz06ZWiO20M_7"] and "label.csv: row 3" in reasons["Oz06ZWiO20M_7"]
    assert "outside [-3.0, 3.0]" in reasons["Oz06ZWiO20M_8"]
    assert "holdout" in reasons["Oz06ZWiO20M_9"]
    # discovery finds the layout from the folder or from its label.csv
    assert [s.segment_id for s in discover_inputs(mmsa_root).specs] == [MOSI_ID]
    assert [s.segment_id for s in discover_inputs(mmsa_root / "label.csv").specs] == [MOSI_ID]


def test_manifest_csv_rows(tmp_path: Path) -> None:
    need(MOSI_CLIP)
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").symlink_to(MOSI_CLIP)
    m = write_csv(
        tmp_path / "manifest.csv",
        "video_path,segment_id,start,end,transcript,sentiment,emotions,sentiment_class,emotion,split",
        'clips/a.mp4,,0,3.5,first part,1.5,"{""happy"": 1.0, ""sad"": 0}",positive,,train',
        "clips/a.mp4,,3.5,7.4,second part,,,,joy,dev",
        ",txt1,,,only words here,-2,,,,test",
        "clips/missing.mp4,gone,,,,,,,,train",
        "clips/a.mp4,bad/id,,,x,,,,,train",
        ",,,,,,,,,train",
        "clips/a.mp4,late,5,4,x,,,,,train",
        'clips/a.mp4,emo,,,x,,"{""joy"": 1}",,,train',
        "clips/a.mp4,cls,,,x,,,sideways,,train",
        ",dup,,,one,,,,,train",
        ",dup,,,two,,,,,train",
    )
    parsed = read_manifest(m)
    specs = {s.segment_id: s for s in parsed.specs}
    assert set(specs) == {"a_1", "a_2", "txt1"}
    a1, a2, t = specs["a_1"], specs["a_2"], specs["txt1"]
    assert a1.video_path == tmp_path / "clips" / "a.mp4" and (a1.start, a1.end) == (0.0, 3.5)
    assert a1.labels["happy"] == 1.0 and a1.labels["sad"] == 0.0 and a1.labels["anger"] == 0.0  # not listed: 0
    assert a1.labels["sentiment_class"] == "positive" and a1.split == "train" and a1.video_id == "a"
    assert a2.labels["emotion_class"] == "joy" and a2.split == "valid" and a2.labels["sentiment"] is None
    assert t.text_only and t.video_path is None and t.start is None and t.labels["sentiment"] == -2.0
    reasons = {f.item_id: f.reason for f in parsed.failures}
    assert "missing.mp4 does not exist" in reasons["gone"] and "row 5" in reasons["gone"]
    assert "path separator" in reasons["bad/id"]
    assert any("needs a video_path or a transcript" in r for r in reasons.values())
    assert "not after start" in reasons["late"]
    assert "unknown keys ['joy']" in reasons["emo"]
    assert "sideways" in reasons["cls"]
    assert "appears 2 times" in reasons["dup"]
    assert len(parsed.failures) == 8
    row = a1.segment_row()
    assert row["segment_id"] == "a_1" and row["source"] == "manifest" and row["fear"] == 0.0
    assert a2.labels["happy"] is None and t.labels["fear"] is None  # no emotion field at all: unknown


def test_manifest_tsv_is_split_on_tabs(tmp_path: Path) -> None:
    m = tmp_path / "m.tsv"
    m.write_text("segment_id\ttranscript\tsentiment\tsplit\nt1\tgreat, really great\t2.5\ttrain\n"
                 "t2\tnot good\t-1\ttest\n")
    parsed = discover_inputs(m)
    assert [(s.segment_id, s.transcript, s.split) for s in parsed.specs] == \
        [("t1", "great, really great", "train"), ("t2", "not good", "test")]
    assert [s.labels["sentiment"] for s in parsed.specs] == [2.5, -1.0] and not parsed.failures


def test_manifest_jsonl_and_video(tmp_path: Path) -> None:
    need(MOSI_CLIP)
    m = tmp_path / "m.jsonl"
    m.write_text("\n".join(json.dumps(r) for r in [
        {"video_path": str(MOSI_CLIP), "segment_id": "clip", "transcript": mosi_transcript(), "sentiment": -0.8,
         "emotions": {"sad": 1.5}, "split": "test"},
        {"transcript": "hello", "segment_id": "t", "happy": 2, "split": "validation"},
        {"segment_id": "neg", "transcript": "x", "fear": -1},
    ]) + "\n")
    parsed = discover_inputs(m)
    assert [s.segment_id for s in parsed.specs] == ["clip", "t"]
    assert parsed.specs[0].labels["sad"] == 1.5 and parsed.specs[1].labels["happy"] == 2.0
    assert parsed.specs[1].split == "valid"
    assert parsed.failures[0].item_id == "neg" and "fear -1.0 is outside [0.0, 3.0]" in parsed.failures[0].reason
    video = read_video(MOSI_CLIP, split="train")
    assert video.specs[0].segment_id == MOSI_ID and video.specs[0].start is None and video.specs[0].split == "train"
    assert discover_inputs(MOSI_CLIP).specs[0].split == "test"


def test_whole_input_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="nope.csv does not exist"):
        discover_inputs(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(PipelineError, match="empty.csv is empty"):
        read_manifest(empty)
    other = write_csv(tmp_path / "other.csv", "a,b", "1,2")
    with pytest.raises(PipelineError, match="other.csv: a manifest needs a video_path or a transcript column"):
        discover_inputs(other)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"transcript": "ok"}\n{not json\n')
    with pytest.raises(PipelineError, match="broken.jsonl: line 2 is not JSON"):
        read_manifest(broken)
    with pytest.raises(PipelineError, match="unknown input type"):
        discover_inputs(write_csv(tmp_path / "x.txt", "hello"))
    with pytest.raises(PipelineError, match="label.csv and Raw"):
        discover_inputs(tmp_path)


@pytest.mark.parametrize("bad", ["", " a", "a/b", "a\\b", "..", "a..b", ".", "a\tb", "a\x00b"])
def test_ids_that_cannot_be_file_names_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        check_id(bad)


def test_ids_kept_as_given() -> None:
    for good in ("Oz06ZWiO20M_6", "video[3]", "clip 1", "naïve-ok.v2"):
        assert check_id(good) == good


def test_mosi_label_file_splits() -> None:
    need(MOSI_LABELS)
    parsed = read_mosi_labels(MOSI_LABELS)
    assert parsed.failures == []
    assert parsed.splits() == {"train": 1281, "valid": 229, "test": 685}
    spec = next(s for s in parsed.specs if s.segment_id == MOSI_ID)
    assert spec.text_only and spec.video_id == "Oz06ZWiO20M" and spec.labels["sentiment"] == pytest.approx(-0.8)
    assert all(-3 <= s.labels["sentiment"] <= 3 for s in parsed.specs)
    assert discover_inputs(MOSI_LABELS).splits() == parsed.splits()


def test_meld_files() -> None:
    need(MELD_DIR / "train_sent_emo.csv", MELD_DIR / "dev_sent_emo.csv")
    train = read_meld(MELD_DIR / "train_sent_emo.csv", "train")
    dev = discover_inputs(MELD_DIR / "dev_sent_emo.csv", split="dev")
    assert (len(train), len(dev)) == (9989, 1109) and not train.failures and not dev.failures
    assert train.splits() == {"train": 9989} and dev.splits() == {"valid": 1109}
    first = train.specs[0]
    assert first.segment_id == "train_dia0_utt0" and first.video_id == "train_dia0"
    assert first.labels["emotion_class"] == "neutral" and first.labels["sentiment_class"] == "neutral"
    assert first.transcript.startswith("also I was the point person")
    emotions = {s.labels["emotion_class"] for s in train.specs}
    assert emotions == {"neutral", "joy", "sadness", "anger", "surprise", "disgust", "fear"}
    # train and dev reuse dialogue numbers; the ids stay unique together
    both = train + dev
    assert len(both) == 9989 + 1109 and not both.failures
    with pytest.raises(PipelineError, match="needs split="):
        discover_inputs(MELD_DIR / "dev_sent_emo.csv")
