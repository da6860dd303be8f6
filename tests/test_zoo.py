"""The model zoo (mmolre/models/*.py): every registered model, on word-level and utterance-level inputs, any subset
of feature sets, one or several tasks; gradients reach what should learn; padding changes nothing."""

from __future__ import annotations

import json

import pytest
import torch

from mmolre.models import ModelOutput, assemble_model, count_parameters, model_config, models
from mmolre.tasks import TaskSpec
from tests.store_fixtures import one_torch_thread  # noqa: F401 - fixture

ZOO = ["tfn", "lmf", "mult", "misa", "self_mm", "mmim"]
SENTIMENT = TaskSpec("sentiment", "regression")
EMOTION = TaskSpec("emotion", "multilabel", ("happy", "sad", "anger"))
WORD_TAV = {"text_minilm": 12, "covarep": 7, "facet": 5}  # word-level sets, small dims
UTTERANCE_TAV = {"bclstm_text": 10, "bclstm_audio": 6, "bclstm_video": 8}  # one step per segment
TINY: dict[str, dict[str, object]] = {  # toy sizes so the tests stay fast; the defaults are MMSA's
    "tfn": {"text_hidden": 8, "text_out": 4, "audio_hidden": 4, "visual_hidden": 4, "post_fusion_dim": 8},
    "lmf": {"text_hidden": 8, "text_out": 4, "audio_hidden": 4, "visual_hidden": 4},
    "mult": {"d_model": 8, "n_heads": 2, "nlevels": 1},
    "misa": {"hidden_size": 8},
    "self_mm": {"post_fusion_dim": 8},
    "mmim": {"d_prjh": 8},
}


def batch(dims: dict[str, int], T: int, B: int = 5, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(B, T, d, generator=g) for m, d in dims.items()}
    mask = {m: torch.rand(B, T, generator=g) > 0.3 for m in dims}
    for m in dims:
        mask[m][0, 0] = True  # the first segment has every set
        mask[m][1] = False if m != next(iter(dims)) else mask[m][1]  # the second lacks every set but the first
        mask[m][2, T // 2:] = False  # the third is shorter (padded)
    return x, mask


def build(name: str, dims: dict[str, int], tasks: tuple[TaskSpec, ...] = (SENTIMENT, EMOTION), **hyper: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return assemble_model(name, model_config(name, dims, tasks, **{**TINY[name], **hyper}))


def test_every_zoo_model_is_registered_with_its_source() -> None:
    known = models()
    for name in ZOO:
        info = known[name]
        assert info.paper and "20" in info.paper
        assert "config_regression.json" in info.defaults_from  # where the defaults come from
        assert "config_regression.json" in (info.config.__doc__ or "")
        assert count_parameters(assemble_model(name, model_config(name, WORD_TAV, (SENTIMENT,)))) > 1000


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize(("dims", "T"), [(WORD_TAV, 9), (UTTERANCE_TAV, 1), ({"text_minilm": 12}, 9), ({"bclstm_text": 10}, 1),
                                         ({"covarep": 7, "facet": 5}, 9)], ids=["word-tav", "utt-tav", "word-t", "utt-t", "word-av"])
def test_shapes_for_any_subset_and_level(name: str, dims: dict[str, int], T: int) -> None:
    for tasks in ((SENTIMENT,), (SENTIMENT, EMOTION)):
        model = build(name, dims, tasks).eval()
        x, mask = batch(dims, T)
        out = model(x, mask)
        assert isinstance(out, ModelOutput)
        assert set(out.outputs) == {t.name for t in tasks}
        for t in tasks:
            assert out.outputs[t.name].shape == (5, t.out_dim)
            assert torch.isfinite(out.outputs[t.name]).all()
        assert out.aux_loss.shape == () and torch.isfinite(out.aux_loss)
        assert model.config.tasks == tasks and model.tasks == list(tasks)


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize(("dims", "T"), [(WORD_TAV, 9), (UTTERANCE_TAV, 1)], ids=["word", "utterance"])
def test_padding_and_absent_steps_change_nothing(name: str, dims: dict[str, int], T: int) -> None:
    model = build(name, dims).eval()
    x, mask = batch(dims, T)
    ref = model(x, mask)
    noisy = {m: torch.where(mask[m][..., None], x[m], torch.randn_like(x[m]) * 100) for m in x}
    longer = {m: torch.cat([noisy[m], torch.randn(5, 3, x[m].shape[2])], dim=1) for m in x}  # more padding
    longer_mask = {m: torch.cat([mask[m], torch.zeros(5, 3, dtype=torch.bool)], dim=1) for m in mask}
    for xs, ms in ((noisy, mask), (longer, longer_mask)):
        out = model(xs, ms)
        for t in ref.outputs:
            torch.testing.assert_close(out.outputs[t], ref.outputs[t], rtol=1e-4, atol=1e-5)
    # and the model does read the present steps
    moved = {m: x[m] + mask[m][..., None] * 1.0 for m in x}
    assert not torch.allclose(model(moved, mask).outputs["sentiment"], ref.outputs["sentiment"])


def _one_step_recurrence(name: str) -> bool:
    """An LSTM's recurrent weights get no gradient over one-step inputs (its first hidden state is zero)."""
    return "weight_hh" in name


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize(("dims", "T"), [(WORD_TAV, 9), (UTTERANCE_TAV, 1)], ids=["word", "utterance"])
def test_gradients_reach_every_parameter(name: str, dims: dict[str, int], T: int) -> None:
    model = build(name, dims).train()
    x, mask = batch(dims, T)
    loss_fn = getattr(model, "label_loss", None)
    b = {"segment_id": [f"s{i}" for i in range(5)], "labels": {"sentiment": torch.tensor([2.0, -1.5, 0.5, -2.5, float("nan")])}}
    for _ in range(3):  # Self-MM's unimodal labels move from a segment's second epoch on; its loss is 0 before
        model.zero_grad()
        out = model(x, mask)
        loss = sum(o.square().sum() for o in out.outputs.values()) + out.aux_loss
        extra = loss_fn(out, b) if loss_fn else None
        (loss + (extra if extra is not None else 0)).backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0) and not (T == 1 and _one_step_recurrence(n))]
    assert missing == []


def test_self_mm_generates_unimodal_labels() -> None:
    """ULGM: labels start at y, stay there in a segment's first epoch, then move, within [-H, H]."""
    model = build("self_mm", WORD_TAV, (SENTIMENT,)).train()
    x, mask = batch(WORD_TAV, 9)
    y = torch.tensor([2.0, -1.5, 0.5, -2.5, 1.0])
    b = {"segment_id": list("abcde"), "labels": {"sentiment": y}}
    loss = model.label_loss(model(x, mask), b)
    assert float(loss.detach()) == 0.0  # tanh(|y_m - y|) = 0 while the unimodal labels equal y
    rows = model.ulgm.rows(list("abcde"), y, {})
    for m in WORD_TAV:
        torch.testing.assert_close(model.ulgm.labels[m][rows], y)
    model.label_loss(model(x, mask), b)  # epoch 2: labels move
    moved = {m: model.ulgm.labels[m][rows] for m in WORD_TAV}
    assert any(not torch.allclose(v, y) for v in moved.values())
    assert all(v.abs().max() <= 3.0 for v in moved.values())
    assert float(model.label_loss(model(x, mask), b).detach()) > 0
    model.eval()
    assert model.label_loss(model(x, mask), b) is None  # never while evaluating
    no_sentiment = build("self_mm", WORD_TAV, (EMOTION,))
    assert no_sentiment.label_loss(no_sentiment(x, mask), b) is None and len(no_sentiment.post) == 0


def test_misa_and_mmim_auxiliary_losses() -> None:
    misa = build("misa", WORD_TAV).eval()
    x, mask = batch(WORD_TAV, 9)
    out = misa(x, mask)
    cfg = misa.config
    expected = cfg.diff_weight * out.extras["diff"] + cfg.sim_weight * out.extras["sim"] + cfg.recon_weight * out.extras["recon"]
    torch.testing.assert_close(out.aux_loss, expected)
    assert float(out.extras["sim"]) > 0
    alone = build("misa", {"text_minilm": 12}).eval()
    assert float(alone(*batch({"text_minilm": 12}, 9)).extras["sim"]) == 0.0  # no pair to compare
    mmim = build("mmim", WORD_TAV).eval()
    out = mmim(x, mask)
    torch.testing.assert_close(out.aux_loss, mmim.config.alpha * out.extras["nce"] - mmim.config.beta * out.extras["lld"])


def test_tfn_refuses_a_huge_fusion_tensor() -> None:
    with pytest.raises(ValueError, match="fused tensor"):
        build("tfn", {f"facet{i}": 4 for i in range(6)}, visual_hidden=64)


def test_config_round_trip_and_unknown_settings() -> None:
    for name in ZOO:
        cfg = model_config(name, WORD_TAV, (SENTIMENT, EMOTION))
        again = type(cfg).from_dict(cfg.to_dict())
        assert again == cfg
        assert type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # JSON lists back as tuples
        with pytest.raises(ValueError, match="no setting"):
            model_config(name, WORD_TAV, (SENTIMENT,), not_a_setting=1)
        with pytest.raises(ValueError, match=rf"unknown {type(cfg).__name__} setting\(s\): not_a_setting \(has: .*dropout"):
            type(cfg).from_dict({**cfg.to_dict(), "not_a_setting": 1})
