"""text_encoder=finetune: a Hugging Face encoder in the model, its sub-words pooled onto the store's words.

Tiny randomly initialised local models (a WordPiece BERT and a byte-level BPE RoBERTa, their tokenizers trained
here with `tokenizers`) stand in for a user's model folder; the packaged MiniLM is fine-tuned for a few steps too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from feature_schemas import SCHEMA_VERSION, Store, StoreError, validate
from mmolre.config import TrainConfig
from mmolre.data import StoreDataset, make_loader
from mmolre.errors import RunError
from mmolre.evaluation import predict_split
from mmolre.inference import evaluate, load_run, predict_segment
from mmolre.optimisation import lr_lambdas, make_optimizer
from mmolre.tasks import TaskSpec
from mmolre.text_encoder import (
    encode_words,
    load_encoder,
    load_tokenizer,
    pool_subwords,
    resolve_text_model,
    token_limit,
)
from mmolre.train import train
from tests.store_fixtures import TINY_ARCH, one_torch_thread, synthetic_store  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ["Hello, world! This is a test.", "I really loved it; it was great.", "Bad, bad movie...",
          " ".join(f"w{j}" for j in range(20)) + ".", "the words as written, punctuation kept!"] * 4
SMALL = {"train": 16, "valid": 8, "test": 8}


def make_wordpiece_model(folder: Path) -> Path:
    """A tiny random BERT with a WordPiece tokenizer trained on CORPUS."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(str(folder))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=48, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(str(folder))
    return folder


def make_bpe_model(folder: Path) -> Path:
    """A tiny random RoBERTa with a byte-level BPE tokenizer trained on CORPUS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    return _save_roberta_like(folder, tok, PreTrainedTokenizerFast, RobertaConfig, RobertaModel)


def _save_roberta_like(folder: Path, tok: Any, tokenizer_class: Any, config_class: Any, model_class: Any) -> Path:
    """`tok` as a RoBERTa-style fast tokenizer (<s> ... </s>) and a tiny random model of `model_class`, saved."""
    fast = tokenizer_class(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                           pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>")
    fast.save_pretrained(str(folder))
    torch.manual_seed(0)
    cfg = config_class(vocab_size=tok.get_vocab_size(), hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=48, max_position_embeddings=80, pad_token_id=fast.pad_token_id)
    model_class(cfg).save_pretrained(str(folder))
    return folder


def make_unigram_model(folder: Path) -> Path:
    """A tiny random XLM-R with a SentencePiece-style Unigram tokenizer (Metaspace) trained on CORPUS."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=120, unk_token="<unk>",
                                                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    return _save_roberta_like(folder, tok, XLMRobertaTokenizerFast, XLMRobertaConfig, XLMRobertaModel)


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_wordpiece_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def roberta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bpe_model(tmp_path_factory.mktemp("tiny-roberta"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_store(tmp_path_factory.mktemp("ft") / "store", labels="mosi", sizes=SMALL)


def _cfg(model: Path | None, **kw: object) -> TrainConfig:
    settings = {"epochs": 1, "batch_size": 8, "max_steps": 2, "progress": False, "text_encoder": "finetune",
                "text_model": str(model) if model else None, "arch": dict(TINY_ARCH), **kw}
    return TrainConfig(**settings)  # type: ignore[arg-type]


# -- sub-word pooling --------------------------------------------------------------------------------------


def test_pool_subwords_means_each_words_subwords_and_masks_words_without_any() -> None:
    hidden = torch.tensor([[[0.0], [1.0], [3.0], [5.0], [7.0], [9.0]]])  # (1, L=6, H=1)
    word_ids = torch.tensor([[-1, 0, 0, 1, 1, -1]])  # [CLS] w0 w0 w1 w1 [SEP]; word 2 lost to truncation
    pooled, has = pool_subwords(hidden, word_ids, 3)
    assert pooled[0, :, 0].tolist() == [2.0, 6.0, 0.0]
    assert has[0].tolist() == [True, True, False]


def test_written_words_keep_punctuation_and_map_each_subword_to_its_word(bert: Path) -> None:
    tok = load_tokenizer(bert)
    ids, wids = encode_words(tok, ["Hello,", "world!"], 32)
    pieces = tok.convert_ids_to_tokens(ids.tolist())
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and wids[0] == wids[-1] == -1
    # the punctuation is a sub-word of the word it was written with, not a word of its own
    assert [p for p, w in zip(pieces, wids, strict=True) if w == 0][-1] == ","
    assert [p for p, w in zip(pieces, wids, strict=True) if w == 1][-1] == "!"
    assert set(wids[1:-1].tolist()) == {0, 1}
    # pooled onto the 2 words: each is the mean of its own sub-words' states
    enc = load_encoder(bert).eval()
    with torch.no_grad():
        h = enc(input_ids=torch.from_numpy(ids)[None]).last_hidden_state
    pooled, has = pool_subwords(h, torch.from_numpy(wids)[None], 2)
    for w in (0, 1):
        assert torch.allclose(pooled[0, w], h[0, torch.from_numpy(wids == w)].mean(0), atol=1e-6)
    assert has.all()


def test_bpe_tokenizer_pools_onto_words_too(roberta: Path) -> None:
    tok = load_tokenizer(roberta)
    ids, wids = encode_words(tok, ["Hello,", "world!", "w12."], 32)
    assert wids[0] == wids[-1] == -1 and set(wids[1:-1].tolist()) == {0, 1, 2}
    assert np.all(np.diff(wids[1:-1]) >= 0)  # sub-words in word order


def test_sub_words_are_capped_at_the_encoders_positions(bert: Path, roberta: Path) -> None:
    """max_tokens (128 by default) past a model's positions failed inside the encoder on the longest segment."""
    words = ["unbelievably", "wonderful,"] * 60  # far more sub-words than either tiny model has positions
    for folder, positions in ((bert, 64), (roberta, 80 - 2)):  # RoBERTa numbers positions from padding_idx + 1
        enc = load_encoder(folder).eval()
        assert token_limit(enc, 128) == positions and token_limit(enc, 16) == 16
        ids, _ = encode_words(load_tokenizer(folder), words, token_limit(enc, 128))
        assert len(ids) == positions
        with torch.no_grad():
            assert enc(input_ids=torch.from_numpy(ids)[None]).last_hidden_state.shape[1] == positions


def test_dataset_reads_written_words_and_keeps_word_alignment(store: Path, bert: Path) -> None:
    tok = load_tokenizer(bert)
    ds = StoreDataset(store, "train", ["text", "audio"], [TaskSpec("sentiment", "regression")], tokenizer=tok, text_set="text")
    batch = next(iter(make_loader(ds, 4)))
    x, mask = batch["x"], batch["mask"]
    assert x["text"].shape[-1] == 0 and x["text"].shape[:2] == x["audio"].shape[:2]  # one step per stored word
    assert x["__input_ids"].shape == x["__attention_mask"].shape == x["__word_ids"].shape
    seg = Store(store).segment(batch["segment_id"][0])
    assert seg["words_written"][-1].endswith(".")  # read as written
    n_words = len(seg["words"])
    wids = x["__word_ids"][0][x["__attention_mask"][0].bool()]
    assert set(wids.tolist()) - {-1} == set(range(n_words))
    assert mask["text"][0, :n_words].all() and not mask["text"][0, n_words:].any()


def test_store_without_words_written_falls_back_to_words_and_validates(tmp_path: Path, bert: Path) -> None:
    old = synthetic_store(tmp_path / "old", labels="mosi", sizes=SMALL, words_written=False)
    assert validate(old).ok
    seg = Store(old).segment(Store(old).segments("train").column("segment_id")[0].as_py())
    assert seg["words_written"] == seg["words"]
    ds = StoreDataset(old, "train", ["text"], [TaskSpec("sentiment", "regression")], tokenizer=load_tokenizer(bert), text_set="text")
    assert next(iter(make_loader(ds, 2)))["x"]["__input_ids"].shape[0] == 2


# -- training ----------------------------------------------------------------------------------------------


def test_encoder_has_its_own_learning_rate_group_and_warmup(store: Path, bert: Path) -> None:
    from mmolre.losses import TaskWeighting, TrainStep
    from mmolre.text_encoder import text_encoder_setup

    cfg = _cfg(bert, lr=1e-3, encoder_lr=2e-5, warmup_ratio=0.0, encoder_warmup=0.5, freeze_layers=1)
    s = Store(store)
    setup = text_encoder_setup(s, ["text", "audio"], cfg)
    assert setup is not None and setup.dataset_kwargs()["tokenizer"] is setup.tokenizer
    encoder, text_set = setup.encoder, setup.text_set
    from mmolre.baselines import build_model
    from mmolre.model import MMoLREConfig
    from mmolre.text_encoder import FinetunedText

    arch = MMoLREConfig(input_dims={"text": encoder.config.hidden_size, "audio": 8}, **TINY_ARCH)
    net = FinetunedText(build_model("mmolre", arch), encoder, text_set)
    step = TrainStep(net, TaskWeighting(arch.tasks, "fixed", {}))
    opt = make_optimizer(step, cfg)
    enc_params = {id(p) for p in encoder.parameters() if p.requires_grad}
    for g in opt.param_groups:
        ids = {id(p) for p in g["params"]}
        assert g["encoder"] == bool(ids & enc_params) and (not g["encoder"] or ids <= enc_params)
        assert g["lr"] == (2e-5 if g["encoder"] else 1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups if g["encoder"]) == len(enc_params) > 0
    # freeze_layers=1: embeddings and the first layer are not trained, the second is
    frozen = {n for n, p in encoder.named_parameters() if not p.requires_grad}
    assert any(n.startswith("embeddings.") for n in frozen) and any(".layer.0." in n for n in frozen)
    assert not any(".layer.1." in n for n in frozen)
    lambdas = lr_lambdas(opt, 10, cfg)
    enc_f = next(f for f, g in zip(lambdas, opt.param_groups, strict=True) if g["encoder"])
    head_f = next(f for f, g in zip(lambdas, opt.param_groups, strict=True) if not g["encoder"])
    assert enc_f(0) == pytest.approx(0.2) and head_f(0) == pytest.approx(1.0)  # the encoder warms up over 5 steps


def test_save_load_round_trip_gives_identical_predictions(store: Path, bert: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    before = {n: p.detach().clone() for n, p in load_encoder(bert).named_parameters()}
    results = train(store, run, "mmolre", _cfg(bert, encoder_lr=1e-2))
    assert (run / "tokenizer" / "tokenizer.json").is_file() and (run / "tokenizer" / "config.json").is_file()
    assert json.loads((run / "config.json").read_text())["text_encoder"] == "finetune"
    best = torch.load(run / "best.pt", weights_only=True)  # safe to load
    enc_keys = [k for k in best["model"] if k.startswith("text_encoder.")]
    assert enc_keys and any(not torch.equal(best["model"][k], before[k.removeprefix("text_encoder.")])
                            for k in enc_keys if k.removeprefix("text_encoder.") in before)  # fine-tuned weights saved
    model, _config, meta = load_run(run)
    ds = StoreDataset(store, "test", meta["feature_sets"], model.config.tasks, meta["max_len"], meta["truncate"], **meta["dataset_kwargs"])
    preds = predict_split(model, ds, torch.device("cpu"), amp="off")
    saved = pd.read_csv(run / "predictions_test.csv").set_index("segment_id")
    got = pd.Series(np.asarray(preds["sentiment"]["pred"]), index=preds["segment_id"])
    np.testing.assert_allclose(got[saved.index].to_numpy(), saved["sentiment_pred"].to_numpy(), rtol=1e-5, atol=1e-5)
    assert evaluate(run, device="cpu")["metrics"]["sentiment"]["mae"] == pytest.approx(results["test"]["sentiment"]["mae"], abs=1e-5)
    # one segment, as `mmolre predict` does: the fine-tuned encoder reads its words
    sid = preds["segment_id"][0]
    seg = Store(store).segment(sid)
    one = predict_segment((model, _config, meta), {"words": seg["words_written"], "audio": seg["audio"],
                                                   "audio__coverage": seg["audio__coverage"]})
    assert one["sentiment"] == pytest.approx(float(got[sid]), abs=1e-4)


def test_fine_tuned_run_resumes_exactly(store: Path, bert: Path, tmp_path: Path) -> None:
    cfg = _cfg(bert, epochs=2, max_steps=None, deterministic=True, encoder_lr=1e-3)
    straight = train(store, tmp_path / "straight", "mmolre", cfg)
    paused = train(store, tmp_path / "sliced", "mmolre", TrainConfig.from_dict({**cfg.to_dict(), "stop_after_epochs": 1}))
    assert paused["status"] == "paused"
    resumed = train(store, tmp_path / "sliced", "mmolre", cfg)
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in straight["history"]]
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["train_step"]
    b = torch.load(tmp_path / "sliced" / "last.pt", weights_only=True)["train_step"]
    assert any(k.startswith("model.text_encoder.") for k in a) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["hard_sharing", "dense_moe", "single_sentiment"])
def test_every_baseline_fine_tunes_the_encoder(store: Path, bert: Path, tmp_path: Path, name: str) -> None:
    results = train(store, tmp_path / name, name, _cfg(bert))
    assert results["test"]["sentiment"]["n"] == SMALL["test"]
    assert any(k.startswith("text_encoder.") for k in torch.load(tmp_path / name / "best.pt", weights_only=True)["model"])


def test_bpe_model_fine_tunes(store: Path, roberta: Path, tmp_path: Path) -> None:
    results = train(store, tmp_path / "run", "mmolre", _cfg(roberta, grad_checkpointing=True, freeze_layers=1))
    assert results["test"]["sentiment"]["n"] == SMALL["test"] and np.isfinite(results["test"]["sentiment"]["mae"])


def test_sentencepiece_model_fine_tunes(store: Path, tmp_path: Path) -> None:
    """An XLM-R folder (Unigram tokenizer, no token type ids) trains inside the model too."""
    xlmr = make_unigram_model(tmp_path / "xlmr")
    ids, wids = encode_words(load_tokenizer(xlmr), ["Hello,", "world!"], 32)
    assert set(wids[1:-1].tolist()) == {0, 1}
    results = train(store, tmp_path / "run", "mmolre", _cfg(xlmr, max_steps=2))
    assert results["arch"]["input_dims"]["text"] == 24 and np.isfinite(results["test"]["sentiment"]["mae"])


@pytest.mark.slow
def test_packaged_minilm_fine_tunes_a_few_steps(store: Path, tmp_path: Path) -> None:
    assert (resolve_text_model(None) / "config.json").is_file()
    results = train(store, tmp_path / "run", "mmolre", _cfg(None, max_steps=2))
    assert results["arch"]["input_dims"]["text"] == 384 and np.isfinite(results["test"]["sentiment"]["mae"])
    assert results["params"]["trainable"] > 20_000_000  # the encoder is trained, not just the heads


# -- refusals ----------------------------------------------------------------------------------------------


def test_store_with_placeholder_words_is_refused(tmp_path: Path, bert: Path) -> None:
    s = synthetic_store(tmp_path / "mmsa", labels="mosi", sizes=SMALL, placeholder_words=True)
    with pytest.raises(StoreError, match=r"placeholder words .*text_encoder=frozen"):
        train(s, tmp_path / "run", "mmolre", _cfg(bert))


def test_a_folder_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not a Hugging Face model folder"):
        resolve_text_model(tmp_path)


def test_unknown_text_encoder_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="text_encoder must be one of"):
        TrainConfig(text_encoder="unfrozen")


# -- the command line --------------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_cli_trains_with_a_fine_tuned_encoder_and_refuses_a_bad_model(store: Path, bert: Path, tmp_path: Path) -> None:
    arch = [f"--set=arch.{k}={json.dumps(v)}" for k, v in TINY_ARCH.items()]
    p = _cli("train", "--store", str(store), "--out", str(tmp_path / "run"), "--text-encoder", "finetune",
             "--text-model", str(bert), "--epochs", "1", "--set", "max_steps=2", "--set", "progress=false", *arch)
    assert p.returncode == 0, p.stderr
    assert "test:" in p.stdout and (tmp_path / "run" / "tokenizer" / "tokenizer.json").is_file()
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["text_encoder"] == "finetune" and cfg["text_model"] == str(bert)
    p = _cli("train", "--store", str(store), "--out", str(tmp_path / "bad"), "--text-encoder", "finetune",
             "--text-model", str(tmp_path / "nothing"), "--epochs", "1")
    assert p.returncode == 1 and "not a Hugging Face model folder" in p.stderr and "Traceback" not in p.stderr


# -- the store keeps each word as written ------------------------------------------------------------------


def test_video_recipe_stores_each_word_as_written(tmp_path: Path) -> None:
    """MELD's "What?" is stored as the word "What" and, in schema 2.1's words_written, as "What?"."""
    from pipelines.recipes.meld import read_meld
    from pipelines.recipes.videos import VideoConfig, build_videos
    from tests import media_fixtures as mf

    mf.need(mf.MELD_DIR / "dev_sent_emo.csv")
    parsed = read_meld(mf.MELD_DIR / "dev_sent_emo.csv", "valid")
    parsed.specs = parsed.specs[:2]  # "Oh my God, he's lost it. He's totally lost it." and "What?"
    build_videos(parsed, tmp_path / "s", VideoConfig(face=None, utterance=False), progress=False)
    store = Store(tmp_path / "s")
    assert store.manifest.schema_version == SCHEMA_VERSION and validate(store.path).ok
    what = store.segment("valid_dia0_utt1")
    assert what["words"] == ["What"] and what["words_written"] == ["What?"]
    oh = store.segment("valid_dia0_utt0")
    assert len(oh["words_written"]) == len(oh["words"]) and "God," in oh["words_written"]


@pytest.mark.slow
def test_torchrun_fine_tunes_on_two_processes_in_sync(store: Path, bert: Path, tmp_path: Path) -> None:
    """`torchrun -m mmolre.train ... --set text_encoder=finetune`: both replicas end with the same encoder."""
    arch = ",".join(f"{k}: {list(v) if isinstance(v, list) else v}" for k, v in TINY_ARCH.items())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           "-m", "mmolre.train", str(store), str(tmp_path / "run"), "--set", "epochs=1", "batch_size=4", "progress=false",
           "text_encoder=finetune", f"text_model={bert}", f"arch={{{arch}}}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    a, b = results["param_checksums"]
    assert results["world_size"] == 2 and a == pytest.approx(b, rel=1e-12, abs=1e-9)


def test_flow_and_cli_settings_become_the_train_config(tmp_path: Path) -> None:
    """The train-mmolre flow and `mmolre train` pass --text-encoder/--text-model through flows.options."""
    import inspect

    from flows.options import text_settings, train_config
    from flows.train_model import train_mmolre

    params = inspect.signature(train_mmolre.fn).parameters
    assert params["text_encoder"].default is None and params["text_model"].default is None
    odd = tmp_path / "my models: roberta-base"  # a path YAML would misread unquoted
    cfg = train_config(None, ["encoder_lr=1e-5"], **text_settings("finetune", str(odd)))
    assert (cfg.text_encoder, cfg.text_model, cfg.encoder_lr) == ("finetune", str(odd), 1e-5)
    assert train_config(None, [], **text_settings(None, None)).text_encoder == "frozen"
    assert TrainConfig().with_overrides(["encoder_lr=1e-5", "text_encoder=finetune"]).encoder_lr == 1e-5  # torchrun --set
