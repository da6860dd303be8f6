"""Schema 2's utterance-level feature sets: the mosi-utterance recipe on the real bc-LSTM release, the writer's
presence rules, old (schema 1) stores, the models, Hugging Face datasets, MMSA export and the benchmark's small run."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_schemas import SCHEMA_VERSION, SchemaVersionError, Store, present_column, validate
from pipelines.recipes.mosi_utterance import build_mosi_utterance, plan_mosi_utterance, valid_videos
from tests.store_fixtures import TINY_ARCH, writer_store

ROOT = Path(__file__).resolve().parents[1]
_CANDIDATES = [ROOT.parent / "shared" / "data", Path("/work/shared/data")]
DATA = next((p for p in _CANDIDATES if (p / "mosi" / "utterance").is_dir()), _CANDIDATES[-1])
RELEASE = DATA / "mosi" / "utterance"
LABELS = DATA / "mosi" / "label.csv"
pytestmark = pytest.mark.skipif(not RELEASE.is_dir(), reason="the shared bc-LSTM release is not here")


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return [r for r in csv.reader(f) if r]


def _write(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows(rows)


def mini_release(dest: Path, n_train: int = 30, n_test: int = 12) -> Path:
    """The release's first rows of each split (real values), transcripts in full: a fast real input."""
    dest.mkdir(parents=True)
    shutil.copy(RELEASE / "transcripts.csv", dest / "transcripts.csv")
    for split, n in (("train", n_train), ("test", n_test)):
        for name in [f"text_{split}.csv"] + [f"{m}_{split}0.csv" for m in ("text", "audio", "video")]:
            _write(dest / name, _rows(RELEASE / name)[:n])
    return dest


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("utt") / "store"
    build_mosi_utterance(RELEASE, root, labels=LABELS, progress=False)
    return root


def test_recipe_on_the_real_release(store: Path) -> None:
    s = Store(store, verify=True)
    assert s.manifest.schema_version == SCHEMA_VERSION and validate(store).ok
    assert s.utterance_sets() == ["bclstm_audio", "bclstm_text", "bclstm_video"] and s.aligned_sets() == []
    assert {n: s.feature_sets[n].dim for n in s.utterance_sets()} == {"bclstm_audio": 73, "bclstm_text": 100, "bclstm_video": 100}
    seg = s.segments().to_pandas()
    transcripts = _rows(RELEASE / "transcripts.csv")
    assert len(seg) == 2199 and set(seg.segment_id) == {r[0] for r in transcripts}
    counts = seg.split.value_counts().to_dict()
    assert counts["test"] == 752 and counts["train"] + counts["valid"] == 1447
    # valid is carved from the training VIDEOS: ~10% of the 62, none shared with train or test
    videos = seg.groupby("split").video_id.agg(set)
    assert len(videos["valid"]) == 6 and len(videos["train"]) == 56 and len(videos["test"]) == 31
    assert not (videos["valid"] & videos["train"]) and not (videos["valid"] & videos["test"])
    assert sorted(videos["valid"]) == s.manifest.report["split"]["valid_videos"]
    # continuous labels joined from label.csv (4 ids are not there), the release's label as sentiment_class
    assert seg.sentiment.isna().sum() == 4 == s.manifest.report["without_continuous_label"]
    binary = {r[0]: r[3] for r in transcripts}
    assert all((c == "positive") == (binary[i] == "1") for i, c in zip(seg.segment_id, seg.sentiment_class, strict=True))
    # the stored vectors are the release's: the first test row of audio_test0.csv
    first = _rows(RELEASE / "text_test.csv")[0]
    sid = transcripts[int(first[0])][0]
    audio = np.array(_rows(RELEASE / "audio_test0.csv")[0][:-1], np.float32)
    one = s.segment(sid)
    np.testing.assert_array_equal(one["bclstm_audio"], audio)
    assert one[present_column("bclstm_audio")] and one["split"] == "test" and one["words"] == one["transcript"].split()
    card = (store / "README.md").read_text()
    assert "config_name: utterance" in card and "holds the words only" in card


def test_validation_videos_are_seeded(store: Path) -> None:
    vids = [f"v{i:02d}" for i in range(62)]
    assert valid_videos(vids, 0.1, 0) == valid_videos(list(reversed(vids)), 0.1, 0)
    assert valid_videos(vids, 0.1, 0) != valid_videos(vids, 0.1, 1) and len(valid_videos(vids, 0.2, 0)) == 12
    plan = plan_mosi_utterance(RELEASE, LABELS, seed=0)  # the store was built with seed 0: the same draw again
    assert plan.report["split"]["valid_videos"] == Store(store).manifest.report["split"]["valid_videos"]
    assert plan.units == plan_mosi_utterance(RELEASE, LABELS, seed=0).units


def test_bad_release_rows_fail_alone_and_bad_layout_is_one_clear_error(tmp_path: Path) -> None:
    src = mini_release(tmp_path / "rel")
    audio = _rows(src / "audio_train0.csv")
    audio[3][5] = "not-a-number"
    _write(src / "audio_train0.csv", audio)
    video = _rows(src / "video_train0.csv")
    video[7][-1] = "1" if video[7][-1] in ("0", "0.0") else "0"  # label disagrees: rows out of order
    _write(src / "video_train0.csv", video)
    result = build_mosi_utterance(src, tmp_path / "s", labels=LABELS, progress=False)
    assert result.n_segments == 40 and result.n_failures == 2
    reasons = " ".join(Store(tmp_path / "s").failures().column("reason").to_pylist())
    assert "audio_train0.csv row 4: not a number" in reasons and "video_train0.csv row 8: binary label differs" in reasons
    # files that are not row-parallel: the CLI says which and exits 1, no traceback
    _write(src / "audio_test0.csv", _rows(src / "audio_test0.csv")[:-1])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "flows.cli", "build", "mosi-utterance", "--input", str(src), "--labels", str(LABELS),
                        "--out", str(tmp_path / "s2"), "--workers", "0", "--quiet"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert p.returncode == 1 and "audio_test0.csv: 11 rows" in p.stderr and "Traceback" not in p.stderr


def test_schema_1_stores_still_read_and_unknown_majors_are_refused(tmp_path: Path) -> None:
    root = writer_store(tmp_path / "v1", n_videos=3)
    m = json.loads((root / "manifest.json").read_text())
    m["schema_version"] = "1.0"
    for fs in m["feature_sets"].values():
        fs.pop("level", None)  # schema 1 manifests have no level
    (root / "manifest.json").write_text(json.dumps(m))
    s = Store(root)
    assert s.manifest.schema_version == "1.0" and all(fs.level == "word" for fs in s.feature_sets.values())
    assert s.aligned_sets() and s.utterance_sets() == [] and s.utterance("train").num_rows == 0
    assert validate(root).ok
    m["schema_version"] = "3.0"
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SchemaVersionError, match="majors 1, 2"):
        Store(root)


@pytest.mark.slow
def test_mmolre_trains_on_utterance_sets(store: Path, tmp_path: Path) -> None:
    from mmolre.config import TrainConfig
    from mmolre.model import MMoLREConfig
    from mmolre.train import train

    torch.set_num_threads(1)
    cfg = TrainConfig(epochs=1, max_steps=3, batch_size=64, progress=False, device="cpu", arch=MMoLREConfig(**TINY_ARCH))
    results = train(store, tmp_path / "run", "mmolre", cfg)
    assert results["feature_sets"] == ["bclstm_audio", "bclstm_text", "bclstm_video"]
    assert results["test"]["sentiment"]["n"] == 751  # 752 segments, one without a continuous label
    assert np.isfinite(results["test"]["sentiment"]["mae"])


def test_every_model_takes_utterance_sets_beside_word_sets(store: Path, tmp_path: Path) -> None:
    from mmolre.baselines import build_model
    from mmolre.data import StoreDataset, collate, feature_stats
    from mmolre.model import MMoLREConfig
    from mmolre.tasks import TaskSpec
    # a word-level set beside utterance-level ones: every model takes both (the latter as one-step sequences)
    mixed = writer_store(tmp_path / "mixed", n_videos=3)
    word_set = Store(mixed).aligned_sets()[0]
    tasks = (TaskSpec("sentiment", "regression"),)
    ds = StoreDataset(store, "valid", ["bclstm_text", "bclstm_audio"], tasks, max_len=None)
    batch = collate(list(ds)[:5])
    assert batch["x"]["bclstm_audio"].shape == (5, 1, 73) and batch["mask"]["bclstm_audio"].all()
    stats = feature_stats(store, "train", ["bclstm_audio"])["bclstm_audio"]
    assert stats[0].shape == (73,) and (stats[1] > 0).all()
    x = {**batch["x"], word_set: torch.randn(5, 7, Store(mixed).feature_sets[word_set].dim)}
    mask = {**batch["mask"], word_set: torch.ones(5, 7, dtype=torch.bool)}
    dims = {m: int(v.shape[-1]) for m, v in x.items()}
    for name in ("mmolre", "hard_sharing", "dense_moe", "single_sentiment"):
        out = build_model(name, MMoLREConfig(input_dims=dims, tasks=tasks, **TINY_ARCH))(x, mask)
        assert out.outputs["sentiment"].shape == (5, 1) and out.modality_weights["sentiment"].shape == (5, 3)


def test_hf_datasets_mmsa_export_and_inspect(store: Path, tmp_path: Path) -> None:
    from datasets import load_dataset

    os.environ["HF_DATASETS_OFFLINE"] = "1"
    ds = load_dataset(str(store), "utterance", cache_dir=str(tmp_path / "hf"))
    assert {k: ds[k].num_rows for k in ds} == {s: Store(store).utterance(s).num_rows for s in ("train", "valid", "test")}
    row = ds["test"][0]
    assert len(row["bclstm_audio"]) == 73 and row["bclstm_audio__present"] is True
    from pipelines.export.mmsa import export_mmsa
    from pipelines.recipes.mmsa import read_mmsa

    data = read_mmsa(export_mmsa(store, tmp_path / "mosi.pkl"))
    # 751: the one test segment without a continuous label is left out (MMSA regresses on every row)
    assert data["test"]["audio"].shape == (751, 1, 73) and data["test"]["vision"].shape == (751, 1, 100)
    assert data["test"]["levels"] == {"text": "utterance", "audio": "utterance", "vision": "utterance"}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "flows.cli", "inspect", str(store), "--json"], capture_output=True, text=True, env=env, cwd=ROOT)
    info = json.loads(p.stdout)
    assert info["schema_version"] == SCHEMA_VERSION and {fs["level"] for fs in info["feature_sets"].values()} == {"utterance"}
    assert info["utterance_rows"] == {"train": 1283, "valid": 164, "test": 752}


@pytest.mark.slow
def test_benchmark_small_run_reproduces_the_probe_floors(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import mosi_utterance as bench

    assert bench.main(["--small", "--work", str(tmp_path), "--data", str(RELEASE)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    probe = result["probes"]["t+a+v"]  # the measured floors, by the same probe on the same split
    assert round(probe["bin_acc"], 2) == 75.66 and round(probe["non0_acc2"], 2) == 78.06
    assert round(result["probes"]["text"]["bin_acc"], 2) == 75.27
    assert set(result["fixed"]) == {"mmolre|text", "single_sentiment|text", "mmolre|t+a+v", "single_sentiment|t+a+v"}
    assert set(result["weights"]["fusion"]) == {"bclstm_text", "bclstm_audio", "bclstm_video"}


def _presence_unit(unit):  # noqa: ANN001, ANN202 - a store writer process function (picklable, top level)
    from pipelines.records import SegmentRecord, UnitResult, Words

    vectors = {"ok": np.arange(4, dtype=np.float32), "missing": None, "nan": np.array([1, np.nan, 0, 0], np.float32),
               "wrong_dims": np.zeros(3, np.float32)}
    recs = []
    for sid, v in vectors.items():
        seg = {"segment_id": sid, "video_id": "v", "split": "train", "sentiment": 0.5, "source": "test", "source_path": None}
        recs.append(SegmentRecord(seg, Words.untimed(["a", "b"]), utterance_features={} if v is None else {"summary": v}))
    return UnitResult(records=recs)


def test_writer_marks_absent_and_non_finite_vectors_and_fails_a_wrong_one_alone(tmp_path: Path) -> None:
    from feature_schemas import FeatureSet
    from pipelines.build import build_store
    from pipelines.records import WorkUnit

    fs = FeatureSet("summary", ("a", "b", "c", "d"), "visual", "test", level="utterance")
    result = build_store(tmp_path / "s", "presence", [WorkUnit("u", "k")], _presence_unit, [fs], progress=False)
    s = Store(tmp_path / "s")
    t = s.utterance("train").to_pydict()
    present = dict(zip(t["segment_id"], t["summary__present"], strict=True))
    assert present == {"ok": True, "missing": False, "nan": False}
    assert t["summary"][t["segment_id"].index("nan")] == [0.0] * 4 and t["summary"][t["segment_id"].index("ok")] == [0, 1, 2, 3]
    assert result.n_failures == 1 and "wrong_dims" in s.failures().column("item_id").to_pylist()
    counters = s.manifest.report["counters"]
    assert counters["absent_utterance.summary"] == 1 and counters["nonfinite_utterance.summary"] == 1
    assert validate(tmp_path / "s").ok and s.segment("ok")["summary"].tolist() == [0, 1, 2, 3]


@pytest.mark.slow
def test_video_build_writes_utterance_sets_by_default(tmp_path: Path) -> None:
    """A real CMU-MOSI clip: eGeMAPS functionals (88), MiniLM's pooled sentence vector, the dlib face summary."""
    from pipelines.extract.text import encode_words
    from pipelines.recipes.videos import VideoConfig, build_videos

    clip = DATA / "mosi" / "raw" / "Oz06ZWiO20M_6.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} is not here")
    text = next(r[1] for r in _rows(LABELS) if r[0] == "Oz06ZWiO20M_6")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f'video_path,segment_id,transcript,sentiment,split\n{clip},clip,"{text}",-0.8,train\n')
    build_videos(manifest, tmp_path / "s", VideoConfig(face="dlib", fps=2.0), progress=False)
    s = Store(tmp_path / "s")
    assert validate(s.path).ok and set(s.utterance_sets()) == {"text_minilm_sentence", "egemaps_functionals", "face_dlib_summary"}
    seg = s.segment("clip")
    assert seg["egemaps_functionals"].shape == (88,) and seg["egemaps_functionals__present"]
    assert s.feature_sets["egemaps_functionals"].dim == 88 and s.feature_sets["egemaps_functionals"].level == "utterance"
    summary = seg["face_dlib_summary"]
    assert summary.shape == (s.feature_sets["face_dlib"].dim + 1,) and 0 < summary[-1] <= 1
    words = list(seg["words"])
    from pipelines.extract.words.normalise import written_words

    expected = encode_words([words], written=[written_words(seg["transcript"], words)])[0].sentence
    np.testing.assert_allclose(seg["text_minilm_sentence"], expected, atol=1e-5)
    off = build_videos(manifest, tmp_path / "s2", VideoConfig(face=None, utterance=False), progress=False)
    assert Store(off.store).utterance_sets() == [] and not (tmp_path / "s2" / "utterance").exists()


def test_video_context_lets_an_utterance_see_only_its_own_video() -> None:
    from mmolre.baselines import build_model
    from mmolre.context import VideoContext, video_batch, videos_of
    from mmolre.model import MMoLREConfig
    from mmolre.tasks import TaskSpec

    torch.manual_seed(0)
    ids = ["b_2", "a_10", "a_2", "b_1", "a_1"]
    assert videos_of(ids) == [[4, 2, 1], [3, 0]]  # by video, utterances in number order (10 after 2)
    cfg = MMoLREConfig(input_dims={"t": 4, "v": 3}, tasks=(TaskSpec("sentiment", "regression"),), **TINY_ARCH)
    for name in ("mmolre", "hard_sharing", "dense_moe"):
        net = VideoContext(lambda c, n=name: build_model(n, c), cfg, hidden=4).eval()
        x = {"t": torch.randn(5, 1, 4), "v": torch.randn(5, 1, 3)}
        mask = {"t": torch.ones(5, 1, dtype=torch.bool), "v": torch.tensor([[True], [False], [True], [True], [True]])}

        def predict(x: dict, net: VideoContext = net, mask: dict = mask) -> torch.Tensor:
            vx, vmask, order = video_batch(x, mask, videos_of(ids))
            out = torch.zeros(5)
            with torch.no_grad():
                out[order] = net(vx, vmask).outputs["sentiment"][:, 0]
            return out

        before = predict(x)
        x["t"][1, 0] += 3.0  # "a_10" changes: the other utterances of video a move, those of video b do not
        after = predict(x)
        assert (after[[2, 4]] - before[[2, 4]]).abs().min() > 0 and torch.equal(after[[0, 3]], before[[0, 3]])


def test_video_feature_sets_have_unique_names_and_can_be_turned_off() -> None:
    from pipelines.recipes.videos import VideoConfig, feature_sets_for

    on = {fs.name: (fs.level, fs.dim) for fs in feature_sets_for(VideoConfig(face=None))}
    assert on["egemaps_functionals"] == ("utterance", 88) and on["text_minilm_sentence"] == ("utterance", 384)
    # word-level functionals already take the name: the utterance copy is left out instead of colliding
    names = [fs.name for fs in feature_sets_for(VideoConfig(face=None, audio_level="functionals"))]
    assert names == ["text_minilm", "egemaps_functionals", "text_minilm_sentence"]
    assert all(fs.level == "word" for fs in feature_sets_for(VideoConfig(face=None, utterance=False)))


@pytest.mark.slow
def test_plain_train_beats_the_probe_floor(store: Path, tmp_path: Path) -> None:
    """`mmolre train --store S` and nothing else: the recipe marks valid unfit for selection (its extractors were
    trained on it), so training runs a fixed 10 epochs and keeps the last; context is on (utterance-level sets, ~23
    utterances a video); the model is sized for 1,283 training segments. It beats the ridge floor on test (78.06
    Non0 Acc-2, bench/mosi_utterance.py's probe; the issue measured 74.4 when selecting on valid)."""
    from mmolre.train import train

    assert Store(store).manifest.fit_for_selection("valid") == (False, Store(store).manifest.split_use["valid"]["why"])
    r = train(store, tmp_path / "run")
    assert r["selection"]["select_metric"] == "last" and r["selection"]["valid_fit_for_selection"] is False
    assert r["config"]["epochs"] == 10 and r["epochs_run"] == 10 and r["best_epoch"] == 10
    assert r["config"]["context"] is True and r["arch"]["d_model"] == 64 and len(r["defaults"]) == 3
    test = r["test"]["sentiment"]
    assert test["n"] == 751 and test["non0_acc2"] > 0.7806, test
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## defaults chosen for this store" in report and "valid split unfit for model selection" in report
