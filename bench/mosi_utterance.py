"""Real multimodal evidence: MMoLRE and the baselines on CMU-MOSI's utterance-level text, audio and video features.

The store is built with the real recipe (`mmolre build mosi-utterance`) from the bc-LSTM release (Poria et al.,
ACL 2017) in /work/shared/data/mosi/utterance: one vector per utterance, text 100 / audio 73 / video 100, the
release's own speaker-independent split (train 62 videos -> train + a seeded ~10% of them as valid, test 31).
Rows are read with `mmolre.data.StoreDataset` (utterance-level sets enter every model as one-step sequences) and
standardised with `feature_stats`; each run then trains in memory (the store is 2,199 rows) so that 80 runs fit
in minutes on two CPU cores.

Per modality set (text, audio, video, text+audio+video), per model, 5 seeds, mean ± std on the release's test split:
  * mmolre, hard_sharing, dense_moe: two tasks, sentiment regression in [-3, 3] (L1) + the release's binary
    polarity (cross-entropy; MOSI has no other label, so this auxiliary task is a coarsened copy of the same one);
  * single_sentiment: the MMoLRE architecture on sentiment alone;
  * probe: ridge (continuous label) and logistic regression (release label) on concatenated standardised
    features, trained on train + valid (the release's whole training split), as the floors in the issue.
Sentiment metrics are MMSA's (Non0/Has0 Acc-2, F1, MAE, Corr, Acc-7) on the regression output; `bin_acc` is the
release's binary accuracy: (prediction >= 0) against the release's label.

The validation videos are contaminated (the release's text and video extractors were trained on them), so each
run reports both: `fixed` = after a fixed number of epochs, and `select` = the epoch with the best valid MAE.
Fusion weights per modality (mean over test segments) and each modality's effective expert rank (router weights
times expert ranks, averaged over test segments and blocks) are reported for MMoLRE text+audio+video.

    .venv/bin/python bench/mosi_utterance.py                  # full: 4 sets x 4 models x 5 seeds
    .venv/bin/python bench/mosi_utterance.py --small          # 1 seed, 2 epochs, 2 models (the test's)
Prints a markdown table, then one JSON line (also written to --out).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_ROOTS = [Path(os.environ.get("MMOLRE_SHARED_DATA", "")), Path(__file__).resolve().parents[1].parent / "shared" / "data",
          Path("/work/shared/data")]
DATA = next((r for r in _ROOTS if str(r) != "." and (r / "mosi" / "utterance").is_dir()), _ROOTS[-1]) / "mosi" / "utterance"
MODALITIES = {"text": ["bclstm_text"], "audio": ["bclstm_audio"], "video": ["bclstm_video"],
              "t+a+v": ["bclstm_text", "bclstm_audio", "bclstm_video"]}
MODELS = ["mmolre", "hard_sharing", "dense_moe", "single_sentiment"]
ARCH = {"d_model": 64, "n_heads": 4, "n_blocks": 1, "expert_ranks": (4, 8, 16, 32), "task_rank": 16, "dropout": 0.5}
TRAIN = {"epochs": 10, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.1, "warmup_ratio": 0.1}  # balance weight: MMoLREConfig's 3e-4
CONTEXT_HIDDEN = 32  # the bidirectional GRU's size per direction, per modality (--context)
HEADLINE = ["bin_acc", "non0_acc2", "non0_f1", "has0_acc2", "has0_f1", "mae", "corr", "acc7"]
FLOORS = {"bin_acc": 75.66, "non0_acc2": 78.06, "mae": 0.950, "corr": 0.626}
TEXT_FLOORS = {"bin_acc": 75.27, "non0_acc2": 77.36, "mae": 0.952, "corr": 0.605}


@dataclass
class Split:
    x: dict[str, Any]  # modality -> (N, 1, D) tensor
    mask: dict[str, Any]  # modality -> (N, 1) bool tensor
    sentiment: np.ndarray  # (N,) float, NaN where label.csv has none
    binary: np.ndarray  # (N,) int: the release's label, 1 = positive
    ids: list[str]  # segment ids, in row order


def build_store(work: Path, data: Path = DATA) -> Path:
    """The store, built once with the real recipe (seconds)."""
    from feature_schemas import Store
    from pipelines.recipes.mosi_utterance import build_mosi_utterance

    store = work / "mosi_utterance_store"
    build_mosi_utterance(data, store, progress=False)  # a rerun of an unchanged build rewrites nothing
    Store(store, verify=True)
    return store


def load_split(store: Path, split: str, sets: list[str]) -> Split:
    """A whole split through the real data path: StoreDataset rows -> collate (one-step sequences)."""
    from feature_schemas import Store
    from mmolre.data import StoreDataset, collate
    from mmolre.tasks import TaskSpec

    ds = StoreDataset(store, split, sets, (TaskSpec("sentiment", "regression"),), max_len=None)
    rows = sorted(ds, key=lambda r: r["segment_id"])
    batch = collate(rows)
    seg = Store(store).segments(split, columns=["segment_id", "sentiment_class"]).to_pylist()
    cls = {r["segment_id"]: r["sentiment_class"] for r in seg}
    binary = np.array([1 if cls[s] == "positive" else 0 for s in batch["segment_id"]], np.int64)
    return Split(batch["x"], batch["mask"], batch["labels"]["sentiment"].numpy(), binary, batch["segment_id"])


def metrics(pred: np.ndarray, split: Split) -> dict[str, float]:
    from mmolre.metrics import sentiment_regression_metrics

    m = sentiment_regression_metrics(pred, split.sentiment)
    out = {k: float(m[k]) for k in HEADLINE if k in m}
    out["bin_acc"] = float(np.mean((pred >= 0).astype(int) == split.binary))
    for k in ("bin_acc", "non0_acc2", "non0_f1", "has0_acc2", "has0_f1", "acc7"):
        out[k] *= 100.0
    return out


def _router_ranks(net: Any, ranks: tuple[int, ...]) -> tuple[list, Any]:
    """Hooks that record each router's gates, so a modality's effective expert rank can be read after a forward."""
    from mmolre.model import TaskRouter

    seen: list[tuple[str, Any]] = []
    hooks = []
    for name, mod in net.named_modules():
        if isinstance(mod, TaskRouter):
            parts = name.split(".")  # [model.]blocks.<modality>.<i>.routers.<task>
            modality = parts[parts.index("blocks") + 1]
            hooks.append(mod.register_forward_hook(lambda _m, inp, out, mo=modality: seen.append((mo, out[0].detach(), inp[1]))))
    return seen, hooks


def _forward(net: Any, split: Split, sets: list[str], rows: Any = None, context: bool = False) -> tuple[dict[str, Any], Any]:
    """The model's output on `rows` of a split (all by default) and the row order of its outputs; with
    `context`, rows are regrouped as whole videos first (every utterance sees the others of its video)."""
    import torch

    from mmolre.context import video_batch, videos_of

    rows = torch.arange(len(split.ids)) if rows is None else rows
    x = {m: split.x[m][rows] for m in sets}
    mask = {m: split.mask[m][rows] for m in sets}
    if not context:
        return net(x, mask), rows
    vx, vmask, order = video_batch(x, mask, videos_of([split.ids[int(i)] for i in rows]))
    return net(vx, vmask), rows[order]


def evaluate(net: Any, split: Split, sets: list[str], ranks: tuple[int, ...] | None = None,
             context: bool = False) -> tuple[dict[str, float], dict[str, Any]]:
    import torch

    net.eval()
    seen, hooks = _router_ranks(net, ranks) if ranks else ([], [])
    with torch.no_grad():
        out, order = _forward(net, split, sets, context=context)
    for h in hooks:
        h.remove()
    pred = np.zeros(len(split.ids), np.float32)
    pred[order.numpy()] = out.outputs["sentiment"][:, 0].numpy()
    weights = {"fusion": out.modality_weights["sentiment"].mean(0).tolist()}
    if ranks and seen:
        r = torch.tensor(ranks, dtype=torch.float32)
        eff: dict[str, list[float]] = {}
        for mo, gates, mask in seen:
            g = gates[mask]  # (n, N) of the present segments
            if len(g):
                eff.setdefault(mo, []).append(float((g @ r).mean()))
        weights["effective_rank"] = {mo: float(np.mean(v)) for mo, v in eff.items()}
    net.train()
    return metrics(pred, split), weights


def train_run(model_name: str, sets: list[str], seed: int, data: dict[str, Split], stats: dict, epochs: int,
              context: bool = False) -> dict[str, Any]:
    """One model, one seed: train `epochs` epochs; keep test metrics at the last epoch and at the best valid MAE."""
    import torch

    from mmolre.baselines import build_model
    from mmolre.losses import TaskWeighting, TrainStep
    from mmolre.model import MMoLREConfig
    from mmolre.tasks import TaskSpec
    from mmolre.train import seed_everything, warmup_cosine

    seed_everything(seed)
    tasks = (TaskSpec("sentiment", "regression"), TaskSpec("polarity", "multiclass", ("negative", "positive")))
    arch = MMoLREConfig(input_dims={m: int(data["train"].x[m].shape[-1]) for m in sets}, tasks=tasks, **ARCH)
    if context:
        from mmolre.context import VideoContext

        net = VideoContext(lambda cfg: build_model(model_name, cfg), arch, hidden=CONTEXT_HIDDEN)
    else:
        net = build_model(model_name, arch)
    net.set_input_stats({m: stats[m] for m in sets})
    step = TrainStep(net, TaskWeighting(net.config.tasks), "l1")
    decay = [p for n, p in step.named_parameters() if p.ndim >= 2 and "norm" not in n]
    no_decay = [p for n, p in step.named_parameters() if not (p.ndim >= 2 and "norm" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": TRAIN["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}], lr=TRAIN["lr"])
    tr = data["train"]
    from mmolre.context import videos_of

    groups = videos_of(tr.ids)  # with context a batch is whole videos, about batch_size utterances
    n = len(groups) if context else len(tr.binary)
    batch = max(1, round(TRAIN["batch_size"] * len(groups) / len(tr.binary))) if context else TRAIN["batch_size"]
    per_epoch = math.ceil(n / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(per_epoch * epochs, TRAIN["warmup_ratio"], 0.01))
    y_sent, y_pol = torch.from_numpy(tr.sentiment), torch.from_numpy(tr.binary)
    rng = np.random.default_rng(seed)
    ranks = tuple(net.config.expert_ranks) if model_name != "hard_sharing" else None
    names = [t.name for t in net.config.tasks]
    best = {"valid_mae": math.inf}
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = torch.from_numpy(rng.permutation(n))
        for i in range(per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            if context:
                idx = torch.tensor([r for g in idx.tolist() for r in groups[g]])
            out, rows = _forward(net, tr, sets, idx, context)
            labels = {"sentiment": y_sent[rows], "polarity": y_pol[rows]}
            parts = step.losses(out.outputs, {k: v for k, v in labels.items() if k in names})
            total = step.weighting(parts) + out.aux_loss
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(step.parameters(), 1.0)
            opt.step()
            sched.step()
        valid, _ = evaluate(net, data["valid"], sets, context=context)
        if valid["mae"] < best["valid_mae"] or epoch == epochs:
            test, weights = evaluate(net, data["test"], sets, ranks, context)
            if valid["mae"] < best["valid_mae"]:
                best = {"valid_mae": valid["mae"], "epoch": epoch, "test": test, "weights": weights}
            if epoch == epochs:
                fixed = {"epoch": epoch, "test": test, "weights": weights, "valid": valid}
    return {"model": model_name + ("+context" if context else ""), "sets": sets, "seed": seed, "fixed": fixed, "select": best,
            "seconds": time.perf_counter() - t0}


def probe(sets: list[str], data: dict[str, Split]) -> dict[str, float]:
    """Ridge (continuous) and logistic (release label) on concatenated standardised features, train + valid."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    def feats(s: Split) -> np.ndarray:
        return np.concatenate([s.x[m][:, 0].numpy() for m in sets], axis=1)

    xtr = np.concatenate([feats(data["train"]), feats(data["valid"])])
    ytr = np.concatenate([data["train"].sentiment, data["valid"].sentiment])
    btr = np.concatenate([data["train"].binary, data["valid"].binary])
    scaler = StandardScaler().fit(xtr)
    xtr, xte = scaler.transform(xtr), scaler.transform(feats(data["test"]))
    keep = np.isfinite(ytr)
    ridge = Ridge(alpha=100.0).fit(xtr[keep], ytr[keep])  # the floors: alpha 100, C 0.1
    out = metrics(ridge.predict(xte), data["test"])
    logit = LogisticRegression(C=0.1, max_iter=3000).fit(xtr, btr)
    out["bin_acc"] = float(np.mean(logit.predict(xte) == data["test"].binary)) * 100.0
    return out


def summarise(runs: list[dict[str, Any]], which: str) -> dict[str, dict[str, tuple[float, float]]]:
    """(model, modality set) -> metric -> (mean, std) over seeds."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for r in runs:
        key = f"{r['model']}|{r['modality']}"
        out.setdefault(key, {})
        for k, v in r[which]["test"].items():
            out[key].setdefault(k, []).append(v)  # type: ignore[arg-type]
    # spread over seeds: the sample std (ddof=1), as everywhere in BENCHMARKS.md; 0 for a single seed
    return {k: {m: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0) for m, v in d.items()}  # type: ignore[misc]
            for k, d in out.items()}


def table(summary: dict[str, dict[str, tuple[float, float]]], probes: dict[str, dict[str, float]], title: str) -> str:
    lines = [f"### {title}", "", "| model | modalities | " + " | ".join(HEADLINE) + " |", "|" + " --- |" * (len(HEADLINE) + 2)]
    for key, d in summary.items():
        model, mod = key.split("|")
        cells = [f"{d[k][0]:.3f} ± {d[k][1]:.3f}" if k == "mae" or k == "corr" else f"{d[k][0]:.2f} ± {d[k][1]:.2f}" for k in HEADLINE]
        lines.append(f"| {model} | {mod} | " + " | ".join(cells) + " |")
    for mod, d in probes.items():
        cells = [f"{d[k]:.3f}" if k in ("mae", "corr") else f"{d[k]:.2f}" for k in HEADLINE]
        lines.append(f"| probe (ridge/logistic) | {mod} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/mmolre_bench/mosi_utterance", help="store and results folder")
    ap.add_argument("--data", default=str(DATA), help="the bc-LSTM release folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--modalities", nargs="+", default=list(MODALITIES))
    ap.add_argument("--epochs", type=int, default=TRAIN["epochs"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--context", action="store_true", help="stretch: each utterance sees its video's others (bc-LSTM-like)")
    ap.add_argument("--small", action="store_true", help="1 seed, 2 epochs, mmolre + probe, text and t+a+v")
    ap.add_argument("--out", default=None, help="results JSON (default: WORK/results.json)")
    args = ap.parse_args(argv)
    if args.small:
        args.seeds, args.models, args.modalities, args.epochs = [0], ["mmolre", "single_sentiment"], ["text", "t+a+v"], 2
    import torch

    from mmolre.data import feature_stats

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    store = build_store(work, Path(args.data))
    all_sets = MODALITIES["t+a+v"]
    data = {s: load_split(store, s, all_sets) for s in ("train", "valid", "test")}
    stats = feature_stats(store, "train", all_sets)
    runs, probes = [], {}
    for mod in args.modalities:
        sets = MODALITIES[mod]
        probes[mod] = probe(sets, data)
        for model in args.models:
            for seed in args.seeds:
                r = train_run(model, sets, seed, data, stats, args.epochs, args.context)
                r["modality"] = mod
                runs.append(r)
                print(f"{r['model']:<24} {mod:<6} seed {seed}: fixed bin_acc {r['fixed']['test']['bin_acc']:.2f} "
                      f"non0 {r['fixed']['test']['non0_acc2']:.2f} mae {r['fixed']['test']['mae']:.3f} | select(epoch "
                      f"{r['select']['epoch']}) bin_acc {r['select']['test']['bin_acc']:.2f} ({r['seconds']:.0f} s)", flush=True)
    fixed, select = summarise(runs, "fixed"), summarise(runs, "select")
    weights = {}
    for r in runs:
        if r["model"] in ("mmolre", "mmolre+context") and r["modality"] == "t+a+v":
            weights.setdefault("fusion", []).append(r["fixed"]["weights"]["fusion"])
            weights.setdefault("effective_rank", []).append(r["fixed"]["weights"].get("effective_rank", {}))
    mods = MODALITIES["t+a+v"]
    summary_weights = {}
    if weights:
        f = np.array(weights["fusion"])
        summary_weights["fusion"] = {m: (float(f[:, i].mean()), float(f[:, i].std(ddof=1)) if len(f) > 1 else 0.0)
                                     for i, m in enumerate(mods)}
        summary_weights["effective_rank"] = {m: float(np.mean([w[m] for w in weights["effective_rank"] if m in w])) for m in mods}
    result = {"seeds": args.seeds, "epochs": args.epochs, "arch": ARCH, "train": TRAIN, "fixed": fixed, "select": select,
              "probes": probes, "weights": summary_weights, "floors": FLOORS, "text_floors": TEXT_FLOORS,
              "seconds": time.perf_counter() - t0, "runs": runs}
    print(table(fixed, probes, f"test, fixed {args.epochs} epochs (no selection)"))
    print()
    print(table(select, probes, "test, epoch selected on valid MAE (valid is contaminated)"))
    print()
    print("MMoLRE t+a+v weights per modality (mean over seeds):", json.dumps(summary_weights))
    out = Path(args.out) if args.out else work / "results.json"
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(json.dumps({k: result[k] for k in ("fixed", "probes", "weights", "seconds")}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
