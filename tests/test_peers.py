"""Our exports read by the peers' own code (issue 29): MMSA 2.2.1's loader, models and trainer on `export mmsa`,
CMU-MultimodalSDK 0.0.6's validation and `align` on `export csd`, and export -> import -> export byte-identical,
on real stores built from ../shared/data (the MOSI bc-LSTM release, MOSI transcripts) and the SDK-written fixture.

MMSA 2.2.1's `MSA_run` calls `torch.cuda.set_device` even without a GPU, so these call its loader, model and
trainer classes directly, as `MSA_run` does; models are tiny and train two epochs.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.csd_fixtures import TEST_C, write_mosei_fixture
from feature_schemas import Store, StoreError, validate
from flows.cli import main as cli
from pipelines.export.csd import write_csd
from pipelines.export.mmsa import write_mmsa
from pipelines.recipes.mmsa import import_mmsa, read_mmsa
from pipelines.recipes.mosi_utterance import build_mosi_utterance
from pipelines.recipes.videos import VideoConfig, build_videos
from tests.store_fixtures import one_torch_thread  # noqa: F401 (autouse fixture)

pytest.importorskip("MMSA", reason="mmsa 2.2.1 is in the dev extra (make install)")
mmdatasdk = pytest.importorskip("mmsdk.mmdatasdk", reason="cmu-multimodal-sdk 0.0.6 is in the dev extra")

ROOT = Path(__file__).resolve().parents[1]
_CANDIDATES = [Path(p) for p in [os.environ.get("MMOLRE_SHARED_DATA")] if p] + [ROOT.parent / "shared" / "data",
                                                                               Path("/work/shared/data")]
DATA = next((p for p in _CANDIDATES if (p / "mosi").is_dir()), _CANDIDATES[-1])
RELEASE, LABEL_CSV = DATA / "mosi" / "utterance", DATA / "mosi" / "label.csv"
OPINION_LABELS = DATA / "mosi" / "CMU_MOSI_Opinion_Labels.csd"
real = pytest.mark.skipif(not (RELEASE.is_dir() and OPINION_LABELS.is_file()), reason="the shared MOSI data is not here")


@pytest.fixture(scope="module")
def utt_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not RELEASE.is_dir():
        pytest.skip("the shared bc-LSTM release is not here")
    root = tmp_path_factory.mktemp("utt") / "store"
    build_mosi_utterance(RELEASE, root, labels=LABEL_CSV, progress=False)
    return root


@pytest.fixture(scope="module")
def text_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text-only store of real MOSI transcripts (MiniLM word vectors, untimed words): 12 rows per split, the
    longest transcript (114 words) among them, and two rows without a label."""
    if not LABEL_CSV.is_file():
        pytest.skip("the shared MOSI labels are not here")
    with open(LABEL_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    longest = max(rows, key=lambda r: len(r["text"].split()))
    picked = [longest]
    for mode in ("train", "dev", "test"):
        picked += [r for r in rows if r["mode"] == mode and r is not longest][:12]
    folder = tmp_path_factory.mktemp("text")
    with open(folder / "m.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["segment_id", "transcript", "sentiment", "split"])
        for k, r in enumerate(picked):
            w.writerow([r["id"], r["text"], "" if k in (3, 20) else r["label"], r["mode"].replace("dev", "valid")])
    build_videos(folder / "m.csv", folder / "store", VideoConfig(face=None, text_segments_per_unit=64), progress=False)
    return folder / "store"


@pytest.fixture(scope="module")
def sdk_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("csd")
    paths = write_mosei_fixture(folder)
    out = tmp_path_factory.mktemp("sdkstore") / "mosei"  # built as a user builds it: `mmolre build mosei`
    assert cli(["build", "mosei", "--csd-dir", str(folder), "--out", str(out), "--keep-frames", "--workers", "0", "--quiet"]) == 0
    return paths["labels"], out


def _export(store: Path, out: Path, **kw) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return write_mmsa(store, out, **kw)


# -- MMSA ------------------------------------------------------------------------------------------------
def _mmsa_args(model: str, pkl: Path, tmp: Path, **over):
    from MMSA.config import get_config_regression

    args = get_config_regression(model, "mosi")
    args.update(custom_feature=str(pkl), feature_T="", feature_A="", feature_V="", device=torch.device("cpu"),
                train_mode="regression", model_save_path=str(tmp / f"{model}.pth"), cur_seed=1, **over)
    return args


def _train_two_epochs(args) -> dict:
    """MMSA's model and trainer classes: two epochs of its TFN loop, then its own test metrics."""
    from MMSA.data_loader import MMDataLoader
    from MMSA.models import AMIO
    from MMSA.trains import ATIO

    torch.manual_seed(0)
    loaders = MMDataLoader(args, 0)
    model, trainer = AMIO(args), ATIO().getTrain(args)
    opt = torch.optim.Adam(list(model.parameters())[2:], lr=args.learning_rate)
    for _ in range(2):
        model.train()
        for batch in loaders["train"]:
            out = model(batch["text"], batch["audio"], batch["vision"])["M"]
            loss = trainer.criterion(out, batch["labels"]["M"].view(-1, 1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return trainer.do_test(model, loaders["test"], mode="TEST")


TINY_TFN = {"hidden_dims": [8, 4, 8], "text_out": 8, "post_fusion_dim": 8, "batch_size": 64}


def test_mmsa_trains_on_the_utterance_store_export(utt_store: Path, tmp_path: Path) -> None:
    """Issue 29: NaN regression_labels made MMSA's test MAE and Corr NaN. Unlabelled segments are left out, named."""
    report = _export(utt_store, tmp_path / "mosi.pkl")
    data = read_mmsa(report.path)
    assert set(data) == {"train", "valid", "test"}
    for split in data.values():
        assert np.isfinite(split["regression_labels"]).all()
        assert list(split["audio_lengths"]) == [1] * len(split["id"])
    assert len(report.unlabeled) == 4 and "5W7Z1C_fDaE_24" in report.unlabeled
    assert report.summary()["left_out_unlabeled"]["count"] == 4
    result = _train_two_epochs(_mmsa_args("tfn", report.path, tmp_path, **TINY_TFN))
    assert all(np.isfinite(float(result[k])) for k in ("MAE", "Corr", "Has0_acc_2", "Non0_acc_2", "Mult_acc_7")), result


def test_text_only_store_exports_every_modality_mmsa_reads(text_store: Path, tmp_path: Path) -> None:
    """Issue 29: a text-only store exported without audio/vision keys and MMSA failed with KeyError: 'audio'."""
    report = _export(text_store, tmp_path / "text.pkl")
    assert report.sets["audio"] is None and any("no audio feature set" in w for w in report.warnings)
    test = read_mmsa(report.path)["test"]
    assert test["audio"].shape == (len(test["id"]), test["text"].shape[1], 1) and test["vision_lengths"] == [1] * len(test["id"])
    assert report.unlabeled and len(report.unlabeled) == 2
    result = _train_two_epochs(_mmsa_args("tfn", report.path, tmp_path, **TINY_TFN))
    assert np.isfinite(float(result["MAE"]))


def test_text_bert_runs_in_mmsa_bert_encoder(text_store: Path, tmp_path: Path) -> None:
    """Issue 29: no text_bert was written, so MMSA's BERT models could not run. The ids are bert-base-uncased's
    (the packaged MiniLM's vocabulary): they decode to the transcript, MMSA's BertTextEncoder runs on them, and its
    Self-MM (with the MiniLM as its `pretrained` BERT, 384-d) trains two epochs to finite predictions."""
    from MMSA.data_loader import MMDataLoader
    from MMSA.models.subNets import BertTextEncoder

    from pipelines.export.bert_tokens import default_tokenizer_path

    report = _export(text_store, tmp_path / "text.pkl", layout="unaligned")
    train = read_mmsa(report.path)["train"]
    tb = train["text_bert"]
    assert tb.shape[:2] == (len(train["id"]), 3) and report.tokenizer and "30522" in report.tokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_tokenizer_path())
    ids = tb[0, 0][tb[0, 1] > 0].astype(int)
    assert tok.decode(ids, skip_special_tokens=True) == tok.decode(tok(str(train["raw_text"][0]))["input_ids"], skip_special_tokens=True)
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    args = _mmsa_args("self_mm", report.path, tmp_path, pretrained=default_tokenizer_path(), text_out=384,
                      use_finetune=False, post_fusion_dim=16)
    loaders = MMDataLoader(args, 0)
    batch = next(iter(loaders["train"]))
    hidden = BertTextEncoder(pretrained=default_tokenizer_path())(batch["text"])
    assert hidden.shape[:2] == (batch["text"].shape[0], tb.shape[2]) and torch.isfinite(hidden).all()
    # MMSA's Self-MM (BERT text, LSTM audio/vision over their lengths), its fusion head trained two epochs
    from MMSA.models import AMIO

    torch.manual_seed(0)
    model = AMIO(args)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if "text_model" not in n], lr=1e-3)
    for _ in range(2):
        for b in loaders["train"]:
            out = model(b["text"], (b["audio"], b["audio_lengths"]), (b["vision"], b["vision_lengths"]))["M"]
            loss = torch.nn.functional.l1_loss(out, b["labels"]["M"].view(-1, 1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        preds = [model(b["text"], (b["audio"], b["audio_lengths"]), (b["vision"], b["vision_lengths"]))["M"] for b in loaders["test"]]
    assert torch.isfinite(torch.cat(preds)).all() and torch.isfinite(loss)


def test_export_import_export_is_byte_identical(utt_store: Path, text_store: Path, sdk_release, tmp_path: Path) -> None:
    """Issue 29: `build mmsa` of the utterance store's export gave word-level sets with zero vectors stored as
    usable, and words were cut at 50. An import now keeps levels, values, masks and words."""
    for name, store, layout in (("utt", utt_store, "aligned"), ("text", text_store, "aligned"),
                                ("sdk", sdk_release[1], "aligned"), ("sdk_u", sdk_release[1], "unaligned")):
        first = _export(store, tmp_path / f"{name}1.pkl", layout=layout)
        result = import_mmsa(first.path, tmp_path / f"{name}_back", progress=False)
        assert result.n_failures == 0 and validate(tmp_path / f"{name}_back").ok
        back, orig = Store(tmp_path / f"{name}_back"), Store(store)
        assert {n: fs.level for n, fs in back.feature_sets.items()} == {n: orig.feature_sets[n].level for n in back.feature_sets}
        if layout == "aligned":
            second = _export(tmp_path / f"{name}_back", tmp_path / f"{name}2.pkl", layout=layout)
            assert second.path.read_bytes() == first.path.read_bytes(), name
    utt = Store(tmp_path / "utt_back")
    assert utt.utterance_sets() == ["bclstm_audio", "bclstm_text", "bclstm_video"] and utt.aligned_sets() == []
    sid = "03bSnISJMiM_1"
    a, b = Store(utt_store).segment(sid), utt.segment(sid)
    for n in ("bclstm_audio", "bclstm_text", "bclstm_video"):
        np.testing.assert_array_equal(a[n], b[n])
    longest = max(Store(text_store).segments(columns=["segment_id", "transcript"]).to_pylist(),
                  key=lambda r: len(r["transcript"].split()))["segment_id"]
    assert len(Store(tmp_path / "text_back").segment(longest)["words"]) == len(Store(text_store).segment(longest)["words"]) > 100


def test_mmsa_padding_is_not_imported_as_data(tmp_path: Path) -> None:
    """Issue 29: padding in an MMSA pickle was stored as usable vectors. Lengths come from `*_lengths`, the
    text_bert mask or the raw text; a modality of one step per segment is utterance-level."""
    rng = np.random.default_rng(0)
    n, L = 3, 8
    text = np.zeros((n, L, 4), np.float32)
    text[0, :5], text[1, :2], text[2, :3] = rng.normal(size=(5, 4)), rng.normal(size=(2, 4)), rng.normal(size=(3, 4))
    text[0, 3] = text[1, 1] = 0.0  # real zero vectors inside a sequence are data, not padding
    audio = np.zeros((n, L, 3), np.float32)
    audio[0, :2], audio[1, :1], audio[2, :3] = 1.0, 2.0, 3.0
    bert = np.zeros((n, 3, L), np.float32)
    bert[0, 1, :5], bert[1, 1, :2], bert[2, 1, :3] = 1, 1, 1  # [CLS] it was good [SEP]; so bad (mask 2); ...
    split = {"id": np.array(["v$_$1", "v$_$2", "v$_$3"], dtype=object),
             "raw_text": np.array(["it was good", "so bad", "not at all"], dtype=object),
             "text": text, "text_bert": bert, "audio": audio, "audio_lengths": [2, 1, 3],
             "vision": rng.normal(size=(n, 1, 5)).astype(np.float32), "vision_lengths": [1, 1, 1],
             "regression_labels": np.array([1.0, -1.0, 0.5], np.float32)}
    pkl = tmp_path / "aligned_50.pkl"
    pkl.write_bytes(pickle.dumps({"train": split}, protocol=2))
    result = import_mmsa(pkl, tmp_path / "s", progress=False)
    assert result.n_failures == 0
    st = Store(tmp_path / "s")
    assert st.feature_sets["mmsa_vision"].level == "utterance" and st.utterance_sets() == ["mmsa_vision"]
    one, two, three = (st.segment("v$_$1"), st.segment("v$_$2"), st.segment("v$_$3"))
    assert len(one["words"]) == 5  # the mask's five steps (wordpieces with [CLS]/[SEP]), not L = 8
    assert two["words"] == ["so", "bad"] and three["words"] == ["not", "at", "all"]  # counts agree: the raw words
    np.testing.assert_array_equal(two["mmsa_text"], text[1, :2])
    np.testing.assert_array_equal(one["mmsa_audio__coverage"], [1, 1, 0, 0, 0])  # audio past its length is padding
    np.testing.assert_allclose(one["mmsa_vision"], split["vision"][0, 0])


# -- CMU-MultimodalSDK ---------------------------------------------------------------------------------------
def _aligned(labels: Path, sequences: dict[str, Path]):
    ds = mmdatasdk.mmdataset({"labels": str(labels), **{k: str(v) for k, v in sequences.items()}})
    ds.align("labels")
    return ds


def test_sdk_store_csd_aligns_to_the_release_labels(sdk_release, tmp_path: Path, capsys) -> None:
    """`export csd` without --sets writes every set (it exited 0 writing nothing); entries by video id on the
    video's timeline; the SDK's align against the release's own labels file gives the store's values."""
    labels, store = sdk_release
    assert cli(["export", "csd", "--store", str(store), "--out", str(tmp_path / "out")]) == 0
    st = Store(store)
    written = sorted(p.stem for p in (tmp_path / "out").glob("*.csd"))
    assert written == sorted(st.feature_sets)
    seq = mmdatasdk.computational_sequence(str(tmp_path / "out" / "covarep.csd"))  # the SDK's validation
    assert set(seq.keys()) == set(st.segments(columns=["video_id"]).column("video_id").to_pylist())
    ds = _aligned(labels, {n: tmp_path / "out" / f"{n}.csd" for n in ("covarep", "glove")})
    ids = st.segments(columns=["segment_id"]).column("segment_id").to_pylist()
    assert sorted(ds["covarep"].keys()) == sorted(ids)
    for sid in ids:
        seg = st.segment(sid, ["covarep", "glove"])
        for n in ("covarep", "glove"):
            np.testing.assert_allclose(ds[n][sid]["features"][()], seg[n], atol=1e-4)
            np.testing.assert_allclose(ds[n][sid]["intervals"][()], np.stack([seg["word_start"], seg["word_end"]], 1), atol=1e-6)
    assert TEST_C in {k.split("[")[0] for k in ds["covarep"].keys()}


def test_a_refused_set_among_several_leaves_nothing_written(sdk_release, tmp_path: Path) -> None:
    """Every named set is checked before the first file is written: a bad one late in the list refuses the lot."""
    from pipelines.export.csd import export_csd_sets

    with pytest.raises(StoreError, match="no feature set 'nope'"):
        export_csd_sets(sdk_release[1], tmp_path / "out", ["covarep", "glove", "nope"])
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="level"):
        export_csd_sets(sdk_release[1], tmp_path / "out", ["covarep"], level="segment")
    assert not (tmp_path / "out").exists()
    written = export_csd_sets(sdk_release[1], tmp_path / "out", ["covarep", "glove"])
    assert [p.name for p in written] == ["covarep.csd", "glove.csd"]
    for p in written:  # the SDK's own validation
        assert mmdatasdk.computational_sequence(str(p)).keys()


@real
def test_utterance_store_csd_on_the_release_timeline(utt_store: Path, tmp_path: Path, capsys) -> None:
    """An utterance store has no times: refused naming what works (it said "has no word-aligned columns"); with
    the release's labels file as timeline, one interval per segment that the SDK aligns to that file."""
    assert cli(["export", "csd", "--store", str(utt_store), "--out", str(tmp_path / "no")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--timeline" in err and "export mmsa" in err and not list((tmp_path / "no").glob("*"))
    assert cli(["export", "csd", "--store", str(utt_store), "--out", str(tmp_path / "out"), "--sets", "bclstm_audio",
                "--timeline", str(OPINION_LABELS)]) == 0
    ds = _aligned(OPINION_LABELS, {"a": tmp_path / "out" / "bclstm_audio.csd"})
    t = Store(utt_store).utterance(None, ["bclstm_audio"])
    truth = dict(zip(t.column("segment_id").to_pylist(), t.column("bclstm_audio").to_pylist(), strict=True))
    checked = 0
    for key in ds["a"].keys():
        vid, i = key[:-1].split("[")
        ivs, ref = ds["a"][key]["intervals"][()], ds["labels"][key]["intervals"][()][0]
        rows = np.flatnonzero(np.all(np.abs(ivs - ref) < 1e-6, axis=1))  # the release's intervals overlap: 93 of 2,199
        assert len(rows) >= 1, key
        got = ds["a"][key]["features"][()][rows]
        assert np.abs(got - np.asarray(truth[f"{vid}_{int(i) + 1}"])).max(axis=1).min() < 1e-4, key
        checked += 1
    assert checked >= 2190


def test_text_only_store_csd_is_refused(text_store: Path, tmp_path: Path, capsys) -> None:
    """Issue 29: a text-only store wrote 27,646 all-NaN intervals (SDK validation passed, align aligned nothing)."""
    assert cli(["export", "csd", "--store", str(text_store), "--out", str(tmp_path / "out"), "--sets", "text_minilm"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no word times" in err and "export mmsa" in err
    assert not (tmp_path / "out" / "text_minilm.csd").exists()
    with pytest.raises(StoreError, match="no word times"):
        write_csd(text_store, "text_minilm", tmp_path / "x.csd")


def test_store_without_segment_times_exports_sdk_aligned_keys(tmp_path: Path, capsys) -> None:
    """Segments that do not know their place in a video (an MMSA import: words on a nominal segment timeline)
    are keyed as the SDK's aligned datasets are, `video_id[i]`, i by the segment's order in its video; the CLI's
    `export mmsa --json` summary names what it left out."""
    rng = np.random.default_rng(1)
    n, L = 3, 4
    split = {"id": np.array(["vid$_$10", "vid$_$2", "other$_$1"], dtype=object),
             "video_id": np.array(["vid", "vid", "other"], dtype=object),
             "raw_text": np.array(["a b", "c d e f", "g"], dtype=object), "text": rng.normal(size=(n, L, 4)).astype(np.float32),
             "text_lengths": [2, 4, 1], "audio": rng.normal(size=(n, 6, 3)).astype(np.float32), "audio_lengths": [6, 5, 2],
             "vision": rng.normal(size=(n, 6, 2)).astype(np.float32), "vision_lengths": [6, 6, 6],
             "regression_labels": np.array([1.0, np.nan, 0.5], np.float32)}
    pkl = tmp_path / "unaligned_50.pkl"
    pkl.write_bytes(pickle.dumps({"train": split}, protocol=2))
    assert import_mmsa(pkl, tmp_path / "s", aligned=False, progress=False).n_failures == 0
    st = Store(tmp_path / "s")
    assert cli(["export", "csd", "--store", str(tmp_path / "s"), "--out", str(tmp_path / "out"), "--sets", "mmsa_text"]) == 0
    seq = mmdatasdk.computational_sequence(str(tmp_path / "out" / "mmsa_text.csd"))
    ids = st.segments(columns=["segment_id"]).column("segment_id").to_pylist()
    expected = {"vid$_$2": "vid[0]", "vid$_$10": "vid[1]", "other$_$1": "other[0]"}  # natural order: 2 before 10
    assert sorted(seq.keys()) == sorted(expected[i] for i in ids)
    for sid in ids:
        seg = st.segment(sid, ["mmsa_text"])
        np.testing.assert_array_equal(seq[expected[sid]]["features"][()], seg["mmsa_text"])
        assert seq[expected[sid]]["intervals"][()].min() >= 0 and seq[expected[sid]]["intervals"][()].max() <= 1
    capsys.readouterr()
    assert cli(["export", "mmsa", "--store", str(tmp_path / "s"), "--out", str(tmp_path / "back.pkl"), "--json",
                "--no-text-bert"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["left_out_unlabeled"]["ids"] == ["vid$_$2"] and summary["layout"] == "aligned"


def test_tokenizer_folder_that_is_not_one_is_refused(sdk_release, tmp_path: Path, capsys) -> None:
    (tmp_path / "tok").mkdir()
    assert cli(["export", "mmsa", "--store", str(sdk_release[1]), "--out", str(tmp_path / "x.pkl"),
                "--tokenizer", str(tmp_path / "tok")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a tokenizer folder" in err and str(tmp_path / "tok") in err
    assert not (tmp_path / "x.pkl").exists()
