"""Label semantics, one rule for every route: a manifest (CSV and JSONL), an MMSA pickle and the SDK's .csd give
the same stored values for the same labels (emotions a row does not list are 0, not null); MELD's sentiment words
are sentiment classes; a dataset's own emotion class set (CREMA-D, RAVDESS, ...) is accepted, recorded in the
manifest, checked by the validator and used by the model."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_schemas import (
    CREMAD_EMOTION_CLASSES,
    EMOTIONS,
    MELD_EMOTION_CLASSES,
    RAVDESS_EMOTION_CLASSES,
    Manifest,
    Store,
    emotion_class_set,
    validate,
)
from pipelines.inputs import read_manifest, resolve_emotion_classes
from pipelines.recipes.mmsa import import_mmsa
from pipelines.recipes.sdk import build_sdk
from pipelines.recipes.videos import VideoConfig, build_videos
from tests import media_fixtures as mf
from tests.store_fixtures import TINY_ARCH, one_torch_thread  # noqa: F401 (autouse fixture)

LABEL_COLUMNS = ("sentiment", *EMOTIONS)
# (id, transcript, sentiment, emotions given); the .csd route can only say "given" as a full vector of 7.
CASES = [
    ("a", "really good film", 1.5, {"happy": 2.0}),
    ("b", "not for me at all", -1.0, {"sad": 1.0, "anger": 0.5}),
    ("c", "it is a film", 0.0, {}),
]
EXPECTED = {
    sid: {"sentiment": s, **{e: emotions.get(e, 0.0) for e in EMOTIONS}} for sid, _, s, emotions in CASES
}
TEXT_ONLY = VideoConfig(face=None, text_segments_per_unit=64)


def stored_labels(store: Path) -> dict[str, dict[str, float | None]]:
    rows = Store(store).segments(columns=["segment_id", *LABEL_COLUMNS]).to_pylist()
    return {r["segment_id"]: {c: r[c] for c in LABEL_COLUMNS} for r in rows}


def write_csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join((header, *rows)) + "\n")
    return path


# -- the four routes ---------------------------------------------------------------------------------
def manifest_csv(folder: Path) -> Path:
    rows = [f'{sid},"{text}",{s},"{json.dumps(emo).replace(chr(34), chr(34) * 2)}",train' for sid, text, s, emo in CASES]
    return write_csv(folder / "m.csv", "segment_id,transcript,sentiment,emotions,split", *rows)


def manifest_jsonl(folder: Path) -> Path:
    """The same labels as per-emotion fields (the CSV gives them as an `emotions` object)."""
    path = folder / "m.jsonl"
    path.write_text("".join(json.dumps({"segment_id": sid, "transcript": text, "sentiment": s, "split": "train",
                                        **({"emotions": {}} if not emo else emo)}) + "\n"
                            for sid, text, s, emo in CASES))
    return path


def mmsa_pickle(folder: Path) -> Path:
    """MMSA's layout; emotions not given are NaN in `emotion_labels` (an all-NaN row gives none)."""
    n = len(CASES)
    emo = np.full((n + 1, len(EMOTIONS)), np.nan, np.float32)
    for i, (_, _, _, listed) in enumerate(CASES):
        for e, v in listed.items():
            emo[i, EMOTIONS.index(e)] = v
    emo[2, :] = 0.0  # "c" gives emotions, none present: MMSA stores zeros
    data = {"train": {
        "id": [sid for sid, *_ in CASES] + ["unknown"],
        "raw_text": [t for _, t, *_ in CASES] + ["no emotion field"],
        "text": np.ones((n + 1, 6, 4), np.float32),
        "regression_labels": np.array([s for _, _, s, _ in CASES] + [0.5], np.float32),
        "emotion_labels": emo,
        "annotations": ["Positive", "Negative", "Neutral", "Positive"],
    }}
    path = folder / "labels.pkl"
    path.write_bytes(pickle.dumps(data, protocol=4))
    return path


def csd_folder(folder: Path) -> Path:
    """The SDK route: All Labels (7 columns) and words, one video per case, through the SDK's own writer."""
    from bench.csd_fixtures import _deploy
    folder.mkdir(parents=True, exist_ok=True)

    labels, words = {}, {}
    for sid, text, s, listed in CASES:
        toks = text.split()
        labels[f"vid_{sid}"] = {"features": np.array([[s, *(listed.get(e, 0.0) for e in EMOTIONS)]], np.float32),
                                "intervals": np.array([[0.0, float(len(toks))]])}
        words[f"vid_{sid}"] = {"features": np.array([[t.encode()] for t in toks]),
                               "intervals": np.array([[k, k + 1.0] for k in range(len(toks))])}
    _deploy(folder / "CMU_MOSEI_Labels.csd", "All Labels", labels, ["sentiment", *EMOTIONS])
    _deploy(folder / "CMU_MOSEI_TimestampedWords.csd", "words", words, ["word"])
    return folder


@pytest.mark.slow
def test_every_route_stores_the_same_labels(tmp_path: Path) -> None:
    """Manifest CSV (`emotions` objects), manifest JSONL (per-emotion fields), MMSA pickle and .csd agree."""
    csv_store, jsonl_store = tmp_path / "csv", tmp_path / "jsonl"
    build_videos(manifest_csv(tmp_path), csv_store, TEXT_ONLY, progress=False)
    build_videos(manifest_jsonl(tmp_path), jsonl_store, TEXT_ONLY, progress=False)
    import_mmsa(mmsa_pickle(tmp_path), tmp_path / "mmsa", progress=False)
    build_sdk(csd_folder(tmp_path / "csd_in"), tmp_path / "csd", folds={"train": [f"vid_{sid}" for sid, *_ in CASES],
                                                                       "valid": [], "test": []}, progress=False)
    from_csd = {k.removeprefix("vid_").removesuffix("[0]"): v for k, v in stored_labels(tmp_path / "csd").items()}
    from_mmsa = stored_labels(tmp_path / "mmsa")
    assert stored_labels(csv_store) == EXPECTED
    assert stored_labels(jsonl_store) == EXPECTED
    assert from_csd == EXPECTED
    assert {k: v for k, v in from_mmsa.items() if k != "unknown"} == EXPECTED
    assert from_mmsa["unknown"] == {"sentiment": 0.5, **{e: None for e in EMOTIONS}}  # no emotion given: unknown
    mmsa_classes = Store(tmp_path / "mmsa").segments(columns=["segment_id", "sentiment_class"]).to_pylist()
    assert {r["segment_id"]: r["sentiment_class"] for r in mmsa_classes} == \
        {"a": "positive", "b": "negative", "c": "neutral", "unknown": "positive"}
    for store in (csv_store, jsonl_store, tmp_path / "mmsa", tmp_path / "csd"):
        assert validate(store).ok, store
        manifest = Manifest.load(store)
        labels = manifest.labels
        assert labels["emotions"] == list(EMOTIONS) and labels["sentiment_classes"] == ["negative", "neutral", "positive"]
        assert "labels" not in manifest.build  # recorded once, in `labels`


def test_absent_emotions_are_zero_and_no_emotion_field_is_unknown(tmp_path: Path) -> None:
    m = write_csv(tmp_path / "m.csv", "segment_id,transcript,emotions,happy,sad,anger,surprise,disgust,fear",
                  'obj,x,"{""happy"": 2}",,,,,,',
                  "cols,x,,,1.5,,,,",
                  "empty_obj,x,{},,,,,,",
                  "none,x,,,,,,,")
    parsed = read_manifest(m)
    labels = {s.segment_id: s.labels for s in parsed.specs}
    assert not parsed.failures
    assert [labels["obj"][e] for e in EMOTIONS] == [2.0, 0, 0, 0, 0, 0]
    assert [labels["cols"][e] for e in EMOTIONS] == [0, 1.5, 0, 0, 0, 0]
    assert [labels["empty_obj"][e] for e in EMOTIONS] == [0] * 6
    assert [labels["none"][e] for e in EMOTIONS] == [None] * 6


@settings(max_examples=100, deadline=None)
@given(given_emotions=st.dictionaries(st.sampled_from(EMOTIONS), st.integers(0, 9).map(lambda k: k / 3), max_size=6))
def test_one_rule_for_object_columns_and_mmsa_rows(given_emotions: dict[str, float]) -> None:
    """Any set of given emotions: an `emotions` object, per-emotion columns (as CSV text) and an MMSA
    `emotion_labels` row with NaN for the rest all store the same six values."""
    from pipelines.inputs import check_labels
    from pipelines.stages.mmsa import _row_labels

    expected = [given_emotions.get(e, 0.0) if given_emotions else None for e in EMOTIONS]
    as_object = check_labels({"emotions": json.dumps(given_emotions)}) if given_emotions else check_labels({})
    as_columns = check_labels({e: str(given_emotions.get(e, "")) for e in EMOTIONS})
    row = np.array([given_emotions.get(e, np.nan) for e in EMOTIONS], np.float32)
    as_mmsa = _row_labels({"id": ["s"], "emotion_labels": row[None]}, 0, emotion_class_set(), "p.pkl")
    for got in (as_object, as_columns, as_mmsa):
        values = [got[e] for e in EMOTIONS]
        assert values == (pytest.approx(expected) if given_emotions else expected)


def test_meld_sentiment_words_in_the_sentiment_column(tmp_path: Path) -> None:
    m = write_csv(tmp_path / "m.csv", "segment_id,transcript,sentiment,sentiment_class",
                  "p,x,positive,", "n,x,Negative,", "z,x, neutral ,neutral", "num,x,-0.5,", "clash,x,positive,negative")
    parsed = read_manifest(m)
    got = {s.segment_id: (s.labels["sentiment"], s.labels["sentiment_class"]) for s in parsed.specs}
    assert got == {"p": (None, "positive"), "n": (None, "negative"), "z": (None, "neutral"), "num": (-0.5, None)}
    assert len(parsed.failures) == 1 and "disagree" in parsed.failures[0].reason


def test_real_meld_columns_as_a_manifest(tmp_path: Path) -> None:
    """MELD's dev file with Sentiment in `sentiment` and Emotion in `emotion`: every row accepted (the old rule
    refused all of them)."""
    import csv

    mf.need(mf.MELD_DIR / "dev_sent_emo.csv")
    with open(mf.MELD_DIR / "dev_sent_emo.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    m = tmp_path / "meld.jsonl"
    m.write_text("".join(json.dumps({"segment_id": f"d{r['Dialogue_ID']}_u{r['Utterance_ID']}", "transcript": r["Utterance"],
                                     "sentiment": r["Sentiment"], "emotion": r["Emotion"], "split": "valid"}) + "\n"
                         for r in rows))
    parsed, classes = resolve_emotion_classes(read_manifest(m))
    assert len(parsed) == len(rows) == 1109 and not parsed.failures
    assert classes.name == "meld" and classes.classes == MELD_EMOTION_CLASSES
    assert {s.labels["sentiment_class"] for s in parsed.specs} == {"negative", "neutral", "positive"}


def test_ravdess_classes_are_found_and_known_codes_mapped(tmp_path: Path) -> None:
    m = write_csv(tmp_path / "m.csv", "segment_id,transcript,emotion", "a,x,Calm", "b,x,happy", "c,x,05", "d,x,")
    parsed, classes = resolve_emotion_classes(read_manifest(m))
    assert classes.name == "ravdess" and classes.classes == RAVDESS_EMOTION_CLASSES
    assert [s.labels["emotion_class"] for s in parsed.specs] == ["calm", "happy", "angry", None]
    assert emotion_class_set({"x", "y"}).classes == ("x", "y")  # an unknown dataset's own names, sorted
    with pytest.raises(ValueError, match="at least two"):
        emotion_class_set(declared="solo")


# -- a CREMA-D-style store: recorded, refused outside its set, validated, trained on ---------------------------
CREMAD_ROWS = [  # (emotion as written, transcript); the codes are CREMA-D's file-name fields
    ("anger", "i am furious about this"), ("ANG", "stop doing that now"), ("disgust", "that is revolting"),
    ("fear", "i am scared of the dark"), ("happy", "what a lovely day"), ("HAP", "this is great news"),
    ("neutral", "the meeting is at noon"), ("NEU", "it is on the table"), ("sad", "i miss them so much"),
    ("sad", "nothing went right"), ("fear", "please do not leave me"), ("disgust", "the food smells awful"),
]


@pytest.fixture(scope="module")
def cremad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cremad")
    tone = {"happy": "positive", "hap": "positive", "neutral": "neutral", "neu": "neutral"}
    rows = [f"s{i},{text},{emo},{tone.get(emo.lower(), 'negative')},{('train', 'valid', 'test')[i % 3]}"
            for i, (emo, text) in enumerate(CREMAD_ROWS)]
    rows.append("calm1,so very calm,calm,neutral,train")  # RAVDESS's class: not CREMA-D's
    m = write_csv(folder / "cremad.csv", "segment_id,transcript,emotion,sentiment,split", *rows)
    build_videos(m, folder / "store", TEXT_ONLY, emotion_classes="cremad", progress=False)
    return folder / "store"


def test_cremad_classes_recorded_and_outsider_refused(cremad: Path) -> None:
    store = Store(cremad)
    assert store.manifest.labels["emotion_classes"] == list(CREMAD_EMOTION_CLASSES)
    assert store.manifest.labels["emotion_class_set"] == "cremad"
    seg = {r["segment_id"]: r["emotion_class"] for r in store.segments(columns=["segment_id", "emotion_class"]).to_pylist()}
    assert seg["s1"] == "anger" and seg["s5"] == "happy" and seg["s7"] == "neutral"  # codes under CREMA-D's names
    assert set(seg.values()) == set(CREMAD_EMOTION_CLASSES) and "calm1" not in seg
    tones = {r["segment_id"]: r["sentiment_class"] for r in store.segments(columns=["segment_id", "sentiment_class"]).to_pylist()}
    assert tones["s0"] == "negative" and tones["s4"] == "positive" and tones["s6"] == "neutral"
    failures = {r["item_id"]: r["reason"] for r in store.failures().to_pylist()}
    assert "'calm' is not one of the build's emotion classes (anger, disgust, fear, happy, neutral, sad)" in failures["calm1"]
    assert validate(cremad).ok
    assert "- `emotion_class`: anger, disgust, fear, happy, neutral, sad (cremad)" in (cremad / "README.md").read_text()


def test_validator_checks_the_store_recorded_classes(cremad: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(cremad, tmp_path / "copy"))
    manifest = Manifest.load(copy)
    manifest.labels = {**manifest.labels, "emotion_classes": list(MELD_EMOTION_CLASSES), "emotion_class_set": "meld"}
    manifest.save(copy)
    problems = [p for p in validate(copy).problems if p.column == "emotion_class"]
    assert {p.row_id for p in problems} == {"s4", "s5", "s8", "s9"}  # happy and sad are not MELD's
    assert "'happy' is not one of the store's classes (neutral, joy," in str(next(p for p in problems if p.row_id == "s4"))


def test_model_on_cremad_classes_predicts_them(cremad: Path, tmp_path: Path) -> None:
    from mmolre import TrainConfig, load_run, predict_segment, train

    cfg = TrainConfig.from_dict(dict(epochs=1, batch_size=4, progress=False, arch=dict(TINY_ARCH), seed=0, device="cpu"))
    results = train(cremad, tmp_path / "run", "mmolre", cfg)
    assert results["status"] == "completed"
    run = load_run(tmp_path / "run")
    emotion = next(t for t in run[2]["tasks"] if t["name"] == "emotion")
    assert emotion["kind"] == "multiclass" and tuple(emotion["classes"]) == CREMAD_EMOTION_CLASSES
    seg = Store(cremad).segment("s0", ["text_minilm"])  # a text-only manifest makes a text-only store
    out = predict_segment(run, {k: seg[k] for k in ("text_minilm", "text_minilm__coverage")})
    assert out["emotion"] in CREMAD_EMOTION_CLASSES and set(out["emotions"]) == set(CREMAD_EMOTION_CLASSES)
    assert set(results["test"]["emotion"]) >= {f"{c}_f1" for c in CREMAD_EMOTION_CLASSES}


def test_mmsa_export_of_a_class_only_store_is_refused(cremad: Path, tmp_path: Path) -> None:
    """MMSA trains on `regression_labels`: a store with classes but no sentiment score has nothing to give it (it
    wrote NaN labels before, issue 29); the classes' round trip through MMSA pickles is
    `test_mmsa_pickle_class_outside_its_recorded_set_fails_that_row` below."""
    from feature_schemas import StoreError
    from pipelines.export.mmsa import export_mmsa

    with pytest.raises(StoreError, match="no segment has a sentiment score"):
        export_mmsa(cremad, tmp_path / "cremad.pkl")
    assert not (tmp_path / "cremad.pkl").exists()


def test_mmsa_export_and_import_keep_classes_and_set(tmp_path: Path) -> None:
    """A scored store with sentiment and emotion classes and a recorded class set: `export mmsa` writes them in
    the keys MMSA ignores, and importing that export restores them (the export round trip the class-only test
    above no longer covers)."""
    from pipelines.export.mmsa import write_mmsa

    data = {"train": {
        "id": ["x", "y", "z", "w"], "raw_text": ["a b", "c d", "e f", "g h"], "text": np.ones((4, 2, 4), np.float32),
        "regression_labels": np.array([1.5, -2.0, 0.0, 0.5], np.float32),
        "annotations": ["Positive", "Negative", "Neutral", "Positive"], "emotion_class": ["HAP", "SAD", None, "ANG"],
        "labels": {"emotion_classes": list(CREMAD_EMOTION_CLASSES), "emotion_class_set": "cremad"},
    }}
    (tmp_path / "p.pkl").write_bytes(pickle.dumps(data, protocol=4))
    assert import_mmsa(tmp_path / "p.pkl", tmp_path / "s", progress=False).n_failures == 0
    report = write_mmsa(tmp_path / "s", tmp_path / "out.pkl", text_bert=False)
    assert report.unlabeled == [] and report.segments["train"] == 4
    assert import_mmsa(report.path, tmp_path / "back", progress=False).n_failures == 0
    back, orig = Store(tmp_path / "back"), Store(tmp_path / "s")
    assert back.manifest.labels == orig.manifest.labels and orig.manifest.labels["emotion_class_set"] == "cremad"
    cols = ["segment_id", "sentiment", "sentiment_class", "emotion_class", *EMOTIONS]
    rows = sorted(back.segments(columns=cols).to_pylist(), key=lambda r: r["segment_id"])
    assert rows == sorted(orig.segments(columns=cols).to_pylist(), key=lambda r: r["segment_id"])
    assert [r["emotion_class"] for r in rows] == ["anger", "happy", "sad", None]  # w, x, y, z
    assert len({r["sentiment_class"] for r in rows}) == 3


def test_mmsa_pickle_class_outside_its_recorded_set_fails_that_row(tmp_path: Path) -> None:
    data = {"train": {
        "id": ["x", "y", "z"], "raw_text": ["a b", "c d", "e f"], "text": np.ones((3, 2, 4), np.float32),
        "regression_labels": np.zeros(3, np.float32), "emotion_class": ["HAP", "calm", None],
        "labels": {"emotion_classes": list(CREMAD_EMOTION_CLASSES), "emotion_class_set": "cremad"},
    }}
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps(data, protocol=4))
    result = import_mmsa(path, tmp_path / "s", progress=False)
    store = Store(tmp_path / "s")
    assert result.n_failures == 1 and store.manifest.labels["emotion_class_set"] == "cremad"
    rows = {r["segment_id"]: r["emotion_class"] for r in store.segments(columns=["segment_id", "emotion_class"]).to_pylist()}
    assert rows == {"x": "happy", "z": None}
    reason = store.failures().to_pylist()[0]["reason"]
    assert "segment y: emotion 'calm' is not one of the store's emotion classes (anger, disgust" in reason
