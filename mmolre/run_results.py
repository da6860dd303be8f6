"""The end of a training run: the best checkpoint scored on valid and test, predictions, results.json, plots and
report.md, every metric with its n and bootstrap interval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from feature_schemas import atomic_write_text

from .baselines import count_parameters
from .checkpoint import load_checkpoint
from .data import StoreDataset
from .evaluation import amp_enabled, predict_split, predictions_frame, results_json, score
from .registry import config_to_dict
from .report import write_plots, write_report
from .run_setup import ModelSetup, TrainState


def finish(out: Path, m: ModelSetup, state: TrainState, device: torch.device, status: str,
           extra: dict[str, Any], valid_ds: StoreDataset | None = None) -> dict[str, Any]:
    """Evaluate the best checkpoint on valid and test, write predictions, results.json, plots and report.md.
    `extra`: what the loop measured (throughput, world size, selection rule...), added to results.json as is;
    `valid_ds`: the loop's valid dataset, read again as it is (its labels and footers are not read twice)."""
    store, store_obj, cfg, net, arch, feature_sets = m.store, m.store_obj, m.cfg, m.net, m.arch, m.feature_sets
    results: dict[str, Any] = {
        "model": cfg.model, "run": str(out.resolve()),
        "store": {"path": store_obj.location, "manifest_sha256": store_obj.manifest_sha256},
        "store_name": store_obj.manifest.name, "feature_sets": feature_sets, "arch": config_to_dict(arch),
        "splits": {s: store_obj.manifest.rows("segments", s) for s in store_obj.splits()},
        "tasks": [t.to_dict() for t in arch.tasks], "config": cfg.to_dict(), "parameters": count_parameters(net),
        "params": {"total": sum(p.numel() for p in net.parameters()),
                   "trainable": sum(p.numel() for p in net.parameters() if p.requires_grad)},
        "epochs_run": state.epoch, "best_epoch": state.best_epoch, "best_value": state.best_value,
        "select_metric": state.select_name or cfg.select_metric, "history": state.history,
        "device": str(device), "amp": "bf16" if amp_enabled(device, cfg.amp) else "off",
        "warnings": m.notes, "dropped_feature_sets": m.dropped, "defaults": m.defaults, **extra,
    }
    if status == "paused":
        atomic_write_text(out / "results.json", results_json({**results, "status": status}) + "\n")
        return results
    best = load_checkpoint(out / "best.pt", map_location=device)
    net.load_state_dict(best["model"])
    frames = {}
    for split in ("valid", "test"):
        if split not in store_obj.splits():
            continue
        ds = valid_ds if split == "valid" and valid_ds is not None else StoreDataset(
            store, split, feature_sets, arch.tasks, cfg.max_len, cfg.truncate, **m.dataset_kwargs)
        preds = predict_split(net, ds, device, max(64, cfg.batch_size), cfg.num_workers, cfg.amp, cfg.sentiment_loss)
        results[split] = score(preds)
        frames[split] = predictions_frame(preds)
        frames[split].to_csv(out / f"predictions_{split}.csv", index=False)
    report_split = "test" if "test" in frames else "valid"
    plots = write_plots(results, frames.get(report_split), out, report_split)
    results["plots"] = [p.name for p in plots]
    atomic_write_text(out / "results.json", results_json({**results, "status": status}) + "\n")
    write_report({**results, "status": status}, out, plots)
    return results
