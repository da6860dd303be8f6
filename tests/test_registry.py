"""The model registry: `mmolre models` reads it, training and inference build any registered model through
`assemble_model` and consume its `ModelOutput`, a model's `label_loss` reaches the loss, and a run of a model
with its own config class is rebuilt from its checkpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from flows.cli import main as cli
from mmolre import TrainConfig, evaluate, load_run, predict_segment, train
from mmolre.models import contract
from mmolre.models.contract import InputNorm, ModelOutput, count_parameters, register_model, set_input_stats
from mmolre.registry import (
    REFERENCE_INPUT_DIMS,
    config_from_dict,
    config_to_dict,
    default_config,
    reference_model,
)
from mmolre.tasks import TaskSpec
from tests.store_fixtures import one_torch_thread, synthetic_store  # noqa: F401 (autouse fixture)


@dataclass
class MeanPoolConfig:
    input_dims: dict[str, int] = field(default_factory=dict)
    tasks: tuple[TaskSpec, ...] = ()
    hidden: int = 8
    kernel: tuple[int, ...] = (1, 2)  # a tuple field: JSON lists must come back as tuples
    label_weight: float = 0.5


class MeanPool(nn.Module):
    """Masked mean of each modality, a small MLP per task; its label_loss counts its calls."""

    def __init__(self, cfg: MeanPoolConfig) -> None:
        super().__init__()
        self.config = cfg
        self.norms = nn.ModuleDict({m: InputNorm(d) for m, d in cfg.input_dims.items()})
        width = sum(cfg.input_dims.values())
        self.heads = nn.ModuleDict({t.name: nn.Sequential(nn.Linear(width, cfg.hidden), nn.GELU(),
                                                          nn.Linear(cfg.hidden, t.out_dim)) for t in cfg.tasks})
        self.label_calls = 0

    def set_input_stats(self, stats: dict) -> None:
        set_input_stats(self.norms, stats)

    def forward(self, x: dict[str, Tensor], mask: dict[str, Tensor]) -> ModelOutput:
        pooled = []
        for m, norm in self.norms.items():
            z = norm(x[m], mask[m])
            pooled.append(z.sum(1) / mask[m].sum(1, keepdim=True).clamp(min=1))
        h = torch.cat(pooled, dim=-1)
        return ModelOutput({t: head(h) for t, head in self.heads.items()}, h.new_zeros(()), extras={"pooled": h})

    def label_loss(self, out: ModelOutput, batch: dict) -> Tensor | None:
        self.label_calls += 1
        assert len(batch["segment_id"]) == len(out.extras["pooled"]) and "sentiment" in batch["labels"]
        return self.config.label_weight * out.extras["pooled"].square().mean() * 0.0


@pytest.fixture
def mean_pool() -> Iterator[str]:
    register_model("mean_pool_test", config=MeanPoolConfig, paper="(a test model)", inputs="any")(MeanPool)
    try:
        yield "mean_pool_test"
    finally:
        contract._MODELS.pop("mean_pool_test", None)


def test_models_json_lists_the_registry_with_parameter_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rows]
    assert names[:3] == ["mmolre", "hard_sharing", "dense_moe"] and len(names) == len(contract.models())
    for r in rows:
        assert r["paper"] and r["inputs"] in ("word", "utterance", "any") and r["parameters"] > 0
    mmolre = rows[0]
    assert mmolre["parameters"] == count_parameters(reference_model("mmolre"))
    assert default_config("mmolre").input_dims == REFERENCE_INPUT_DIMS
    dense = next(r for r in rows if r["name"] == "dense_moe")
    assert dense["parameters"] > 2 * mmolre["parameters"]  # full-rank experts
    assert cli(["models"]) == 0
    assert "hard-sharing" in capsys.readouterr().out


def test_config_round_trips_for_any_registered_config(mean_pool: str) -> None:
    cfg = config_from_dict(mean_pool, {"hidden": 4, "kernel": [3, 4], "input_dims": {"a": 2}, "tasks": [
        {"name": "sentiment", "kind": "regression"}]})
    assert cfg.kernel == (3, 4) and cfg.tasks == (TaskSpec("sentiment", "regression"),)
    assert config_from_dict(mean_pool, json.loads(json.dumps(config_to_dict(cfg)))) == cfg
    with pytest.raises(ValueError, match="model 'mean_pool_test' has no setting.*d_model"):
        config_from_dict(mean_pool, {"d_model": 4})
    # a TrainConfig for another model: its arch is that model's config, and switching back needs the defaults
    tc = TrainConfig.from_dict({"model": mean_pool, "arch": {"hidden": 3}})
    assert isinstance(tc.arch, MeanPoolConfig) and tc.arch.hidden == 3
    with pytest.raises(ValueError, match="arch settings are for model 'mean_pool_test'"):
        tc.with_model("mmolre")
    assert TrainConfig().with_model(mean_pool).arch == default_config(mean_pool)
    assert TrainConfig(model="single_emotion").model == "mmolre" and TrainConfig(model="single_emotion").tasks == ["emotion"]


def test_any_registered_model_trains_reloads_and_predicts(mean_pool: str, tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "store", "mosei", sizes={"train": 64, "valid": 16, "test": 16})
    cfg = TrainConfig.from_dict({"epochs": 2, "batch_size": 16, "lr": 3e-3, "progress": False, "model": mean_pool,
                                 "arch": {"hidden": 6}, "tasks": ["sentiment"]})
    r = train(store, tmp_path / "run", config=cfg)
    assert r["model"] == mean_pool and r["arch"]["hidden"] == 6 and [t["name"] for t in r["tasks"]] == ["sentiment"]
    assert np.isfinite(r["test"]["sentiment"]["mae"]) and r["test"]["sentiment"]["n"] == 16
    ck = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert ck["model_name"] == mean_pool and ck["arch"]["kernel"] == [1, 2]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"] == mean_pool and saved["arch"]["hidden"] == 6
    model, config, meta = load_run(tmp_path / "run")
    assert isinstance(model, MeanPool) and model.config.kernel == (1, 2) and config.model == mean_pool
    again = evaluate(tmp_path / "run", split="test")
    assert again["metrics"]["sentiment"]["mae"] == pytest.approx(r["test"]["sentiment"]["mae"])
    p = predict_segment(tmp_path / "run", {"text": np.zeros((3, 16)), "audio": np.zeros((3, 8))})
    assert isinstance(p["sentiment"], float) and p["tasks"]["sentiment"]["word_contribution"] == []


def test_label_loss_reaches_the_loss_through_the_wrappers(mean_pool: str) -> None:
    from mmolre.context import VideoContext
    from mmolre.losses import TaskWeighting, TrainStep

    tasks = (TaskSpec("sentiment", "regression"),)
    net = MeanPool(MeanPoolConfig({"a": 3}, tasks))
    step = TrainStep(net, TaskWeighting(tasks))
    x, mask = {"a": torch.randn(4, 5, 3)}, {"a": torch.ones(4, 5, dtype=torch.bool)}
    total, parts = step(x, mask, {"sentiment": torch.zeros(4)}, {"segment_id": list("abcd")})
    assert net.label_calls == 1 and torch.isfinite(total)
    ctx = VideoContext(lambda c: MeanPool(c), MeanPoolConfig({"a": 3}, tasks), hidden=2)
    assert ctx.label_loss(net(x, mask), {"segment_id": list("abcd"), "labels": {"sentiment": torch.zeros(4)}}) == 0
    assert ctx.model.label_calls == 1



def test_label_loss_is_added_to_the_total(mean_pool: str) -> None:
    """The value of label_loss enters the loss, also through VideoContext (MeanPool's own is 0 by design, so counting
    its calls cannot tell whether the trainer adds it)."""
    from mmolre.context import VideoContext, video_batch
    from mmolre.losses import TaskWeighting, TrainStep

    class Labelled(MeanPool):
        def label_loss(self, out: ModelOutput, batch: dict) -> Tensor | None:
            return out.extras["pooled"].new_tensor(2.5)

    tasks = (TaskSpec("sentiment", "regression"),)
    cfg, labels = MeanPoolConfig({"a": 3}, tasks), {"sentiment": torch.zeros(4)}
    x, mask = {"a": torch.randn(4, 1, 3)}, {"a": torch.ones(4, 1, dtype=torch.bool)}
    vx, vmask, _ = video_batch(x, mask, [[0, 1], [2, 3]])
    for net, xs, ms, extra in ((MeanPool(cfg), x, mask, 0.0), (Labelled(cfg), x, mask, 2.5),
                               (VideoContext(Labelled, cfg, hidden=2), vx, vmask, 2.5)):
        total, parts = TrainStep(net, TaskWeighting(tasks))(xs, ms, labels, {"segment_id": list("abcd")})
        assert parts["aux"].item() == pytest.approx(extra)
        assert total.item() == pytest.approx(parts["sentiment"].item() + extra)
