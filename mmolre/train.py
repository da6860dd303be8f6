"""Training: `train(store, out, model, config) -> results`, the same code on one CPU, one GPU or many (torchrun).

AdamW with linear warm-up and cosine decay, gradient clipping, task-loss weighting, early stopping on a
validation metric, bf16 autocast on CUDA, atomic checkpoints (`last.pt` every epoch, `best.pt` on improvement)
that resume exactly, then the best checkpoint on the test split, `results.json`, plots and `report.md`.

    python -m mmolre.train STORE OUT [--model mmolre] [--config cfg.yaml] [--set lr=1e-3 arch.d_model=64]
    torchrun --nproc_per_node 4 -m mmolre.train STORE OUT ...
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from feature_schemas.storage import is_url

from .baselines import legacy_name
from .checkpoint import check_inputs, load_checkpoint, load_weights, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .context import as_videos
from .data import make_loader
from .distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    broadcast_flag,
    gather_objects,
    init_from_env,
    shutdown,
)
from .errors import RunError
from .evaluation import autocast, flatten, predict_split, results_json, score, selection_value, to_device
from .optimisation import seed_everything, warmup_cosine
from .registry import config_to_dict
from .run_dir import claim_run_dir
from .run_results import finish
from .run_setup import (
    ModelSetup,
    Optimisation,
    Selection,
    TrainState,
    build_model_setup,
    make_optimisation,
    selection_rule,
)

__all__ = ["main", "seed_everything", "train", "warmup_cosine"]

log = logging.getLogger("mmolre.train")

CHECKPOINT_VERSION = 1


def _param_checksum(module: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum().item() for p in module.parameters()))


def train(store: str | Path, out: str | Path, model: str | None = None, config: TrainConfig | None = None,
          overwrite: bool = False) -> dict[str, Any]:
    """Train `model` (any registered model; default: `config.model`) on `store`, writing checkpoints, results.json,
    plots and report.md into `out` (checked and locked first: `mmolre.run_dir`; `overwrite` replaces another run).

    `store` may be a URL (`s3://bucket/prefix`): batches stream from object storage, nothing is copied locally.
    Returns the results dict (also on non-main distributed ranks, where it lacks evaluation)."""
    cfg = config or TrainConfig()
    if model is not None:
        cfg = cfg.with_model(model)
    model = cfg.model
    store, out = (store if is_url(store) else Path(store).resolve()), Path(out)
    ctx = init_from_env(cfg.device)
    try:
        with claim_run_dir(out, model, cfg.to_dict(), store, overwrite, lock=ctx.is_main):
            return _train(store, out, model, cfg, ctx)
    finally:
        shutdown(ctx)


def _resume(last_path: Path, m: ModelSetup, o: Optimisation, ctx: DistContext) -> TrainState | None:
    """The loop's state from `last.pt` (weights, optimiser, schedule and RNGs restored), or None to start fresh."""
    if not (m.cfg.resume and last_path.is_file()):
        return None
    ck = load_checkpoint(last_path, map_location=ctx.device)
    if legacy_name(str(ck.get("model_name")))[0] != m.cfg.model:
        raise RunError(f"{last_path}: a checkpoint of {ck.get('model_name')!r}, not {m.cfg.model!r}; use another output directory")
    check_inputs(last_path, ck, m.feature_sets, m.arch.input_dims, m.store_obj.location)
    load_weights(o.step_module, ck["train_step"], last_path)
    o.optimizer.load_state_dict(ck["optimizer"])
    o.scheduler.load_state_dict(ck["scheduler"])
    rngs = ck["rng"]
    set_rng_state(rngs[ctx.rank] if ctx.rank < len(rngs) else rngs[0])
    log.info("resumed %s at epoch %d", last_path, ck["state"]["epoch"])
    return TrainState.from_dict(ck["state"])


def _train_epoch(m: ModelSetup, o: Optimisation, ctx: DistContext, state: TrainState, show: bool) -> tuple[dict[str, Any], int]:
    """One epoch of optimisation steps; returns its history row (losses, lr, throughput) and its batch count."""
    cfg, arch, device, epoch = m.cfg, m.arch, ctx.device, state.epoch
    o.train_ds.set_epoch(epoch)
    n_batches = o.train_ds.min_batches_per_epoch(cfg.batch_size, cfg.num_workers) if o.video_loader is None else len(o.video_loader)
    if cfg.max_steps is not None:
        n_batches = min(n_batches, cfg.max_steps - state.step)
    loader: Any = make_loader(o.train_ds, cfg.batch_size, cfg.num_workers, pin_memory=device.type == "cuda")
    if o.video_loader is not None:
        o.video_loader.set_epoch(epoch)
        loader = o.video_loader
    o.step_module.train()
    sums = torch.zeros(len(arch.tasks) + 2, dtype=torch.float64, device=device)  # total, tasks..., aux
    samples = 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    bar = tqdm(islice(loader, n_batches), total=n_batches, disable=not show, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
    for batch in bar:
        x, mask, labels = to_device(as_videos(batch), device)
        with autocast(device, cfg.amp):
            total, parts = o.trainer(x, mask, labels, {"segment_id": batch["segment_id"]})
        o.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(o.step_module.parameters(), cfg.grad_clip)
        o.optimizer.step()
        o.scheduler.step()
        state.step += 1
        samples += len(batch["segment_id"])
        sums += torch.stack([total.detach().double()] + [parts[t.name].double() for t in arch.tasks] + [parts["aux"].double()])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    [global_samples] = all_reduce_sum(ctx, [float(samples)])
    means = (sums / max(1, n_batches)).tolist()
    row: dict[str, Any] = {
        "epoch": epoch + 1, "step": state.step, "lr": o.scheduler.get_last_lr()[0], "train_loss": means[0],
        **{f"train_loss/{t.name}": means[i + 1] for i, t in enumerate(arch.tasks)}, "train_aux": means[-1],
        "train_samples": global_samples, "train_seconds": seconds, "samples_per_s": global_samples / max(seconds, 1e-9),
    }
    return row, n_batches


def _judge_epoch(m: ModelSetup, o: Optimisation, rule: Selection, ctx: DistContext, state: TrainState,
                 row: dict[str, Any], show: bool) -> tuple[bool, bool]:
    """(improved, stop): score valid (on the main rank), keep the best epoch, count epochs without improvement."""
    if not ctx.is_main:
        return False, False
    cfg = m.cfg
    if o.valid_ds is not None:
        metrics = score(predict_split(m.net, o.valid_ds, ctx.device, max(64, cfg.batch_size), cfg.num_workers, cfg.amp,
                                      cfg.sentiment_loss), resamples=0)
        row.update({f"valid/{k}": v for k, v in flatten(metrics).items()})
        name, value = selection_value(metrics, "loss" if rule.keep_last else rule.select)
        name = "last epoch (valid loss shown)" if rule.keep_last else name
    else:  # no validation split: the last epoch is the one kept
        name, value = "train_loss", row["train_loss"]
    row["select"] = value
    better = value < state.best_value if rule.minimize else value > state.best_value
    improved = o.valid_ds is None or rule.keep_last or better or state.best_epoch < 0
    if improved:
        state.best_value, state.best_epoch, state.bad_epochs = value, row["epoch"], 0
    else:
        state.bad_epochs += 1
    stop = cfg.patience > 0 and o.valid_ds is not None and not rule.keep_last and state.bad_epochs >= cfg.patience
    state.select_name = name
    _log_epoch(row, show, improved)
    return improved, stop


def _results(out: Path, m: ModelSetup, o: Optimisation, ctx: DistContext, state: TrainState, timing: dict[str, float],
             status: str, rule: Selection) -> dict[str, Any]:
    """Throughput, parameter checksums and, on the main rank, the test scores and files (`finish`)."""
    cfg, device = m.cfg, ctx.device
    results: dict[str, Any] = {"model": cfg.model, "status": status, "world_size": ctx.world_size, "rank": ctx.rank}
    throughput = {
        "train_samples_per_s": timing["samples"] / max(timing["seconds"], 1e-9),
        "step_time_s": timing["seconds"] / max(timing["steps"], 1),
        "steps": int(timing["steps"]),
        "batch_size_per_rank": cfg.batch_size,
    }
    if device.type == "cuda":
        throughput["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    results["param_checksums"] = gather_objects(ctx, _param_checksum(m.net))  # equal on every rank when DDP kept them in sync
    if ctx.is_main:
        extra = {"world_size": ctx.world_size, "param_checksums": results["param_checksums"], "throughput": throughput,
                 "selection": rule.to_dict()}
        results.update(finish(out, m, state, device, status, extra, o.valid_ds))
    return results


def _train(store: Path | str, out: Path, model_name: str, cfg: TrainConfig, ctx: DistContext) -> dict[str, Any]:
    """Build the model, then epochs of training, scoring and checkpointing until done, stopped early or paused."""
    m = build_model_setup(store, model_name, cfg, ctx)
    cfg, device = m.cfg, ctx.device
    o = make_optimisation(m, ctx)
    rule = selection_rule(m, o.valid_ds is not None)
    state = _resume(out / "last.pt", m, o, ctx) or TrainState.start(rule)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")
        if m.text is not None:
            m.text.save(out)
    show = cfg.progress and ctx.is_main
    timing = {"samples": 0.0, "seconds": 0.0, "steps": 0.0}
    epochs_this_run, status = 0, "completed"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    while state.epoch < cfg.epochs and not state.stopped:
        if cfg.stop_after_epochs is not None and epochs_this_run >= cfg.stop_after_epochs:
            status = "paused"
            break
        if cfg.max_steps is not None and state.step >= cfg.max_steps:
            break
        row, n_batches = _train_epoch(m, o, ctx, state, show)
        for key, value in (("samples", row["train_samples"]), ("seconds", row["train_seconds"]), ("steps", n_batches)):
            timing[key] += value
        improved, stop = _judge_epoch(m, o, rule, ctx, state, row, show)
        state.history.append(row)
        state.epoch += 1
        epochs_this_run += 1
        state.stopped = broadcast_flag(ctx, stop)
        _save_checkpoints(out, m, o, ctx, state, row, improved)
    if state.stopped:
        status = "early_stopped"
    results = _results(out, m, o, ctx, state, timing, status, rule)
    barrier(ctx)
    return results


def _save_checkpoints(out: Path, m: ModelSetup, o: Optimisation, ctx: DistContext, state: TrainState,
                      row: dict[str, Any], improved: bool) -> None:
    """`last.pt` (everything a resume needs, every rank's RNG states) and, on improvement, `best.pt`."""
    rngs = gather_objects(ctx, rng_state())  # a collective: every rank takes part
    if not ctx.is_main:
        return
    cfg = m.cfg
    meta = {
        "model_name": cfg.model, "arch": config_to_dict(m.arch), "feature_sets": m.feature_sets,
        "store": m.store_obj.location, "max_len": cfg.max_len, "truncate": cfg.truncate,
        "checkpoint_version": CHECKPOINT_VERSION, "text_encoder": cfg.text_encoder,
        "text_set": m.text.text_set if m.text is not None else None,
    }
    if improved:
        save_checkpoint(out / "best.pt", {**meta, "model": m.net.state_dict(), "epoch": state.epoch,
                                          "config": cfg.to_dict(), "metrics": row})
    save_checkpoint(out / "last.pt", {
        **meta, "train_step": o.step_module.state_dict(), "optimizer": o.optimizer.state_dict(),
        "scheduler": o.scheduler.state_dict(), "state": state.to_dict(), "rng": rngs, "config": cfg.to_dict(),
    })


def _log_epoch(row: dict[str, Any], show: bool, improved: bool) -> None:
    keys = [k for k in row if k.startswith("valid/") and k.split("/")[-1] in ("loss", "mae", "corr", "non0_acc2", "wf1_mean", "wacc_mean", "wf1", "acc")]
    text = f"epoch {row['epoch']}: train {row['train_loss']:.4f} " + " ".join(f"{k[6:]}={_num(row[k])}" for k in keys) + (" *" if improved else "")
    if show:
        tqdm.write(text)
    else:
        log.info(text)


def _num(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmolre.train", description="Train MMoLRE or a baseline on a feature store.")
    ap.add_argument("store")
    ap.add_argument("out")
    ap.add_argument("--model", default=None, help="a registered model (`mmolre models`); default: the config's (mmolre)")
    ap.add_argument("--config", help="YAML or JSON TrainConfig")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override settings, e.g. epochs=5 arch.d_model=64")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = TrainConfig.load(args.config) if args.config else TrainConfig()
    cfg = cfg.with_overrides(args.set)
    results = train(args.store, args.out, args.model, cfg)
    if results.get("rank", 0) == 0:
        summary = {k: results.get(k) for k in ("model", "status", "best_epoch", "world_size")}
        summary["test"] = results.get("test")
        print(results_json(summary, indent=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
