"""Text-only benchmarks on real labels: CMU-MOSI sentiment and MELD sentiment + emotion, MiniLM word vectors.

Stores are built with the pipelines (MOSI's label.csv, MELD's train/dev csv -> text-only segments -> MiniLM
word vectors) and cached under --work. Every model trains in the same harness over several seeds; the table gives
mean ± std. Linear probes on mean-pooled word vectors are the floor a working model must beat:
  * MOSI: ridge regression (alpha chosen on valid MAE), scored on test;
  * MELD: multinomial logistic regression per task (C chosen on dev wF1); MELD's test split is kept aside, so
    models and probes are selected and reported on dev (optimistic, and the same for every row).

    .venv/bin/python bench/text_benchmarks.py                         # both datasets, 3 seeds, 2 jobs
    .venv/bin/python bench/text_benchmarks.py --datasets mosi --seeds 0 --models mmolre
    .venv/bin/python bench/text_benchmarks.py --models mmolre --text-encoder frozen finetune   # + fine-tuned rows
With `--text-encoder finetune` the MiniLM runs inside the model over the store's written words and is trained
with it (text_encoder=finetune, FINETUNE settings below); rows are labelled `model (finetune)` and carry the
runs' mean wall time. `--max-steps N` caps every run (a smoke run, not a result).
Finished runs are reused while their store is unchanged; a store built by another text encoder version is
rebuilt (delete --work/runs to retrain anyway). Prints a markdown table, then one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(os.environ.get("MMOLRE_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
TEXT_SET = "text_minilm"

DATASETS: dict[str, dict[str, Any]] = {
    "mosi": {
        "models": ["mmolre", "hard_sharing", "dense_moe"],
        "report_split": "test",
        "config": {"epochs": 20, "patience": 6, "batch_size": 32, "lr": 5e-4, "select_metric": "sentiment/mae"},
        "headline": {"sentiment": ["has0_acc2", "non0_acc2", "non0_f1", "mae", "corr", "acc7"]},
    },
    "meld": {
        "models": ["mmolre", "hard_sharing", "dense_moe", "single_sentiment", "single_emotion"],
        "report_split": "valid",
        "config": {"epochs": 12, "patience": 4, "batch_size": 64, "lr": 1e-3, "select_metric": "sentiment/wf1,emotion/wf1"},
        "headline": {"sentiment": ["acc", "wf1"], "emotion": ["acc", "wf1"]},
    },
}
ARCH = {"d_model": 128, "dropout": 0.3}
# text_encoder=finetune: fewer epochs (a pretrained encoder converges in a few), its own lower rate and warm-up
FINETUNE: dict[str, dict[str, Any]] = {
    "mosi": {"epochs": 6, "patience": 3, "batch_size": 32, "text_encoder": "finetune", "encoder_lr": 3e-5, "encoder_warmup": 0.1},
    "meld": {"epochs": 4, "patience": 2, "batch_size": 32, "text_encoder": "finetune", "encoder_lr": 3e-5, "encoder_warmup": 0.1},
}


# --- stores -----------------------------------------------------------------------------------------------

def build_store(name: str, work: Path) -> Path:
    """The text-only store of a dataset, built once with the pipelines (MiniLM on CPU: minutes for MELD)."""
    import shutil

    import pyarrow.parquet as pq

    from feature_schemas import Store
    from pipelines.recipes.meld import read_meld
    from pipelines.recipes.mosi_text import read_mosi_labels
    from pipelines.recipes.videos import VideoConfig, build_videos

    store = work / f"{name}_text"
    cfg = VideoConfig(face=None, align=False, transcribe=False, asr_fallback=False, threads=2, text_batch_size=64)
    if (store / "manifest.json").is_file():
        s = Store(store)
        written = "words_written" in pq.read_schema(s.files("aligned")[0]).names  # schema 2.1: what finetune reads
        if s.feature_sets[TEXT_SET].config == cfg.text_encoder().feature_set().config and written:
            return store
        print(f"{store}: built by another text encoder version (or before schema 2.1); rebuilding", file=sys.stderr)
        shutil.rmtree(store)
    if name == "mosi":
        parsed = read_mosi_labels(DATA / "mosi" / "label.csv")
    else:
        parsed = read_meld(DATA / "meld" / "train_sent_emo.csv", "train") + read_meld(DATA / "meld" / "dev_sent_emo.csv", "valid")
    t = time.perf_counter()
    build_videos(parsed, store, cfg, progress=False, name=f"{name}-text")
    print(f"built {store} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return store


# --- linear probes ----------------------------------------------------------------------------------------

def pooled(store: Path, split: str) -> tuple[np.ndarray, Any]:
    """Mean of a segment's word vectors, L2-normalised (a sentence embedding), with its segments rows."""
    from feature_schemas import Store, column_vectors

    s = Store(store)
    a = s.aligned(split, [TEXT_SET])
    X = np.stack([v.mean(0) if len(v) else np.zeros(a.column(TEXT_SET).type.value_type.list_size) for v in column_vectors(a.column(TEXT_SET))])
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-8)
    seg = s.segments(split).to_pandas().set_index("segment_id").loc[a.column("segment_id").to_pylist()]
    return X, seg


def probe_mosi(store: Path) -> dict[str, Any]:
    from sklearn.linear_model import Ridge

    from mmolre.metrics import sentiment_regression_metrics

    (Xtr, tr), (Xva, va), (Xte, te) = (pooled(store, s) for s in ("train", "valid", "test"))
    best = min((np.abs(Ridge(alpha=a).fit(Xtr, tr.sentiment).predict(Xva) - va.sentiment).mean(), a) for a in (0.1, 0.3, 1, 3, 10, 30))
    model = Ridge(alpha=best[1]).fit(Xtr, tr.sentiment)
    return {"alpha": best[1], "test": {"sentiment": sentiment_regression_metrics(model.predict(Xte), te.sentiment.to_numpy())}}


def probe_meld(store: Path) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    from feature_schemas import Manifest
    from mmolre.metrics import classification_metrics

    manifest = Manifest.load(store)  # the store's own class sets (MELD's for stores built before `labels`)
    (Xtr, tr), (Xva, va) = (pooled(store, s) for s in ("train", "valid"))
    out: dict[str, Any] = {"valid": {}}
    for task, classes in (("sentiment", manifest.sentiment_classes), ("emotion", manifest.emotion_classes)):
        col = f"{task}_class"
        ytr = tr[col].map({c: i for i, c in enumerate(classes)}).to_numpy()
        yva = va[col].map({c: i for i, c in enumerate(classes)}).to_numpy()
        scored = []
        for C in (0.3, 1, 3, 10, 30):
            m = LogisticRegression(C=C, max_iter=3000).fit(Xtr, ytr)
            scored.append((classification_metrics(m.predict(Xva), yva, classes)["wf1"], C, m))
        wf1, C, m = max(scored, key=lambda s: s[0])
        out["valid"][task] = classification_metrics(m.predict(Xva), yva, classes) | {"C": C}
    return out


# --- model runs -------------------------------------------------------------------------------------------

def run_one(dataset: str, store: str, model: str, seed: int, runs: str, text_encoder: str = "frozen",
            max_steps: int | None = None) -> dict[str, Any]:
    """One training run in its own process (one torch thread, so two jobs share two cores without stalls)."""
    import torch

    torch.set_num_threads(1)
    from mmolre import TrainConfig, train

    spec = DATASETS[dataset]
    cfg = dict(spec["config"], feature_sets=[TEXT_SET], seed=seed, progress=False, arch=dict(ARCH), max_steps=max_steps)
    if text_encoder == "finetune":
        cfg.update(FINETUNE[dataset])
    if model.startswith("single_"):
        task = model.removeprefix("single_")
        cfg["select_metric"] = ",".join(m for m in cfg["select_metric"].split(",") if m.startswith(task + "/")) or cfg["select_metric"]
    out = Path(runs) / dataset / f"{model}{'_finetune' if text_encoder == 'finetune' else ''}{f'_steps{max_steps}' if max_steps else ''}_seed{seed}"
    done, stamp = out / "results.json", out / "store.sha256"
    digest = hashlib.sha256((Path(store) / "manifest.json").read_bytes()).hexdigest()  # which store it learnt from
    if done.is_file() and stamp.is_file() and stamp.read_text() == digest:
        saved = json.loads(done.read_text())
        if saved.get("status") in ("completed", "early_stopped"):
            return {"dataset": dataset, "model": model, "seed": seed, "results": saved, "reused": True, "text_encoder": text_encoder}
    t = time.perf_counter()
    results = train(store, out, model, TrainConfig.from_dict(cfg))
    results["wall_s"] = time.perf_counter() - t
    stamp.write_text(digest)
    atomic = out / "results.json"  # keep the wall time with the run, so a reused run reports it too
    atomic.write_text(json.dumps({**json.loads(atomic.read_text()), "wall_s": results["wall_s"]}) + "\n")
    return {"dataset": dataset, "model": model, "seed": seed, "results": results, "reused": False, "text_encoder": text_encoder}


def summarise(dataset: str, runs: list[dict[str, Any]], probe: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    spec = DATASETS[dataset]
    split = spec["report_split"]
    cols = [(t, m) for t, ms in spec["headline"].items() for m in ms]
    lines = [f"### {dataset} ({split}; mean ± std over seeds)", "", "| model | seeds | " + " | ".join(f"{t} {m}" for t, m in cols)
             + " | params | wall s |", "|" + "---|" * (len(cols) + 4)]
    table: dict[str, Any] = {}
    for model, enc in [(m, e) for m in spec["models"] for e in ("frozen", "finetune")]:
        rs = [r["results"] for r in runs if r["dataset"] == dataset and r["model"] == model and r.get("text_encoder", "frozen") == enc]
        if not rs:
            continue
        label = model if enc == "frozen" else f"{model} (finetune)"
        walls = [r["wall_s"] for r in rs if isinstance(r.get("wall_s"), (int, float))]
        row = {}
        for t, m in cols:
            vals = [r[split][t][m] for r in rs if t in r.get(split, {})]
            sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0  # the sample std over seeds (ddof=1)
            row[f"{t}/{m}"] = (float(np.mean(vals)), sd, len(vals)) if vals else None
        table[label] = {"metrics": row, "seeds": len(rs), "params": rs[0]["parameters"], "best_epochs": [r["best_epoch"] for r in rs],
                        "wall_s": float(np.mean(walls)) if walls else None}
        cells = [f"{v[0]:.4f} ± {v[1]:.4f}" if v else "–" for v in row.values()]
        wall = f"{np.mean(walls):.0f}" if walls else "–"
        lines.append(f"| {label} | {len(rs)} | " + " | ".join(cells) + f" | {rs[0]['parameters']['total']:,} | {wall} |")
    pm = probe.get(split, {})
    cells = [f"{pm[t][m]:.4f}" if t in pm and m in pm[t] else "–" for t, m in cols]
    lines.append("| linear probe | – | " + " | ".join(cells) + " | – | – |")
    return lines, table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="MMoLRE vs baselines on CMU-MOSI and MELD text (MiniLM word vectors)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmolre_bench"))
    ap.add_argument("--datasets", nargs="+", default=["mosi", "meld"], choices=list(DATASETS))
    ap.add_argument("--models", nargs="+", default=None, help="default: every model of each dataset")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--text-encoder", nargs="+", default=["frozen"], choices=("frozen", "finetune"),
                    help="frozen: the store's MiniLM vectors; finetune: MiniLM trained inside the model (both: both rows)")
    ap.add_argument("--max-steps", type=int, default=None, help="cap every run (smoke runs only)")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        sys.exit(f"{DATA}: the shared data folder is missing")
    args.work.mkdir(parents=True, exist_ok=True)
    stores = {d: build_store(d, args.work) for d in args.datasets}
    probes = {d: (probe_mosi if d == "mosi" else probe_meld)(stores[d]) for d in args.datasets}
    print(json.dumps({"probes": probes}, default=float), file=sys.stderr)
    jobs = [(d, str(stores[d]), m, s, str(args.work / "runs"), e, args.max_steps) for d in args.datasets
            for m in (args.models or DATASETS[d]["models"]) if m in DATASETS[d]["models"] for e in args.text_encoder for s in args.seeds]
    t = time.perf_counter()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(run_one, *zip(*jobs, strict=True)))
    wall = time.perf_counter() - t
    report, tables = [], {}
    for d in args.datasets:
        lines, tables[d] = summarise(d, runs, probes[d])
        report += lines + [""]
    print("\n".join(report))
    print(json.dumps({"wall_s": wall, "jobs": args.jobs, "seeds": args.seeds, "arch": ARCH,
                      "configs": {d: DATASETS[d]["config"] for d in args.datasets}, "probes": probes, "tables": tables}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
