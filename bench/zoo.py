"""The model zoo against MMoLRE, in the same trainer, on real data: every registered model over several seeds.

Settings (each a store built from ../shared/data and a training recipe; rows are `model`, mean ± sample std, ddof=1):
  mosi_ft     CMU-MOSI text, the packaged MiniLM fine-tuned inside every model (`text_encoder: finetune`),
              standard folds; 3 epochs, the epoch with the best valid MAE, reported on test.
  mosi_utt    CMU-MOSI utterance release (bc-LSTM features), text + audio + video, the release's own split;
              a fixed 10 epochs (`select_metric: last`: its valid videos were seen by the release's extractors),
              reported on test.
  mosi_utt_ctx  the same with `context: true` (a GRU over each video's utterances feeds the model).
  mosei       CMU-MOSEI text (label_train_valid.csv: train / valid of the standard folds; test kept aside), the
              store's MiniLM word vectors (frozen); a fixed 3 epochs, reported on valid (never selected on).
  mosei_ft    the same with the MiniLM fine-tuned; one epoch (CPU time: ~16k segments through MiniLM).
Training settings per model are MMSA 2.2.1's (config_regression.json, datasetParams.mosi: learning rate, batch size,
weight decay, gradient clipping; MODEL_TRAIN below); MMoLRE keeps the settings of bench/text_benchmarks.py and
bench/mosi_utterance.py. Metrics are MMSA's (mmolre.metrics) with their n and the run's 95% bootstrap interval.

    .venv/bin/python bench/zoo.py --settings mosi_ft --seeds 0 1 2 3 4 --jobs 2 --work /tmp/zoo
    .venv/bin/python bench/zoo.py --summarise --work /tmp/zoo        # the table of whatever has finished
Each run goes in its own process with one torch thread; a finished run (results.json) is reused. Stores: the MOSI
text store as bench/text_benchmarks.py builds it (`--work/mosi_text`), the utterance store by the mosi-utterance
recipe (`--work/mosi_utt`), the MOSEI text store by the mosei-text recipe (`--work/mosei_text`).
Prints a markdown table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(os.environ.get("MMOLRE_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
ZOO = ["mmolre", "tfn", "lmf", "mult", "misa", "self_mm", "mmim"]
UTT_SETS = ["bclstm_text", "bclstm_audio", "bclstm_video"]
FINETUNE = {"text_encoder": "finetune", "encoder_lr": 3e-5, "encoder_warmup": 0.1}
SETTINGS: dict[str, dict[str, Any]] = {
    "mosi_ft": {"store": "mosi_text", "report": "test", "sets": ["text_minilm"],
                "train": {"epochs": 3, "patience": 3, "select_metric": "sentiment/mae", **FINETUNE}},
    "mosi_utt": {"store": "mosi_utt", "report": "test", "sets": UTT_SETS,
                 "train": {"epochs": 10, "patience": 0, "select_metric": "last", "tasks": ["sentiment"], "context": False}},
    "mosi_utt_ctx": {"store": "mosi_utt", "report": "test", "sets": UTT_SETS,
                     "train": {"epochs": 10, "patience": 0, "select_metric": "last", "tasks": ["sentiment"], "context": True}},
    "mosei": {"store": "mosei_text", "report": "valid", "sets": ["text_minilm"],
              "train": {"epochs": 3, "patience": 0, "select_metric": "last"}},
    "mosei_ft": {"store": "mosei_text", "report": "valid", "sets": ["text_minilm"],
                 "train": {"epochs": 1, "patience": 0, "select_metric": "last", **FINETUNE}},
}
# MMSA 2.2.1 config_regression.json, datasetParams.mosi of each model (lr: learning_rate / learning_rate_other / lr_main)
MODEL_TRAIN: dict[str, dict[str, Any]] = {
    "tfn": {"lr": 1e-3, "batch_size": 32, "weight_decay": 0.0},
    "lmf": {"lr": 1e-3, "batch_size": 64, "weight_decay": 5e-3},
    "mult": {"lr": 2e-3, "batch_size": 16, "weight_decay": 5e-3, "grad_clip": 0.6},
    "misa": {"lr": 1e-4, "batch_size": 16, "weight_decay": 0.0, "grad_clip": 0.8},
    "self_mm": {"lr": 1e-3, "batch_size": 16, "weight_decay": 1e-3},
    "mmim": {"lr": 1e-3, "batch_size": 32, "weight_decay": 1e-4, "grad_clip": 1.0},
}
MMOLRE_TEXT = {"lr": 5e-4, "batch_size": 32, "arch": {"d_model": 128, "dropout": 0.3}}  # bench/text_benchmarks.py
MMOLRE_UTT = {"lr": 1e-3, "batch_size": 64, "weight_decay": 0.1,  # bench/mosi_utterance.py
              "arch": {"d_model": 64, "n_heads": 4, "n_blocks": 1, "expert_ranks": [4, 8, 16, 32], "task_rank": 16, "dropout": 0.5}}
HEADLINE = ["non0_acc2", "non0_f1", "has0_acc2", "mae", "corr", "acc7"]
MMSA_PUBLISHED = {"tfn": 79.08, "mult": 80.98, "misa": 83.54, "self_mm": 84.82}  # Non0 Acc-2, MOSI, BERT, multimodal
# (shown beside mosi_ft, the same standard folds; theirs read BERT-base + audio + video, ours MiniLM text alone)


# --- stores -----------------------------------------------------------------------------------------------

def mosei_store(work: Path, train_segments: int | None = None) -> Path:
    """MOSEI text by the mosei-text recipe (label_train_valid.csv -> words + MiniLM word vectors); with
    `train_segments`, a seeded random subset of the train fold (every valid segment is kept)."""
    import csv
    import random

    from pipelines.recipes.mosei_text import build_mosei_text

    source = DATA / "mosei" / "label_train_valid.csv"
    store = work / ("mosei_text" if train_segments is None else f"mosei_text_train{train_segments}")
    if (store / "manifest.json").is_file():
        return store
    if train_segments is not None:
        with source.open(newline="") as f:
            rows = list(csv.DictReader(f))
        train = [r for r in rows if r["mode"] == "train"]
        kept = set(map(id, random.Random(0).sample(train, min(train_segments, len(train)))))
        source = work / f"mosei_train{train_segments}.csv"
        with source.open("w", newline="") as g:
            w = csv.DictWriter(g, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(r for r in rows if r["mode"] != "train" or id(r) in kept)
    build_mosei_text(source, store, progress=False)
    return store


def build_store(name: str, work: Path, mosei_train: int | None = None) -> Path:
    if name == "mosi_text":
        from bench.text_benchmarks import build_store as text_store

        return text_store("mosi", work)
    if name == "mosi_utt":
        from pipelines.recipes.mosi_utterance import build_mosi_utterance

        store = work / "mosi_utt"
        if not (store / "manifest.json").is_file():
            build_mosi_utterance(DATA / "mosi" / "utterance", store, labels=DATA / "mosi" / "label.csv", progress=False)
        return store
    return mosei_store(work, mosei_train)


# --- runs -------------------------------------------------------------------------------------------------

def run_config(setting: str, model: str, seed: int) -> dict[str, Any]:
    spec = SETTINGS[setting]
    own = (MMOLRE_UTT if spec["store"] == "mosi_utt" else MMOLRE_TEXT) if model == "mmolre" else MODEL_TRAIN[model]
    # `model` named in the config, so MMoLRE's `arch` is read as this model's settings
    return {**spec["train"], **own, "model": model, "feature_sets": spec["sets"], "seed": seed, "progress": False}


def run_one(setting: str, store: str, model: str, seed: int, runs: str) -> dict[str, Any]:
    """One run in its own process, one torch thread; CPU time is this process's (a fresh one per run)."""
    import torch

    torch.set_num_threads(1)
    from mmolre import TrainConfig, train

    out = Path(runs) / setting / f"{model}_seed{seed}"
    done = out / "results.json"
    if done.is_file() and json.loads(done.read_text()).get("status") in ("completed", "early_stopped"):
        return {"setting": setting, "model": model, "seed": seed, "reused": True}
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        train(store, out, model, TrainConfig.from_dict(run_config(setting, model, seed)))
    except Exception as e:  # one failed run must not lose the others
        (out / "failed.txt").parent.mkdir(parents=True, exist_ok=True)
        (out / "failed.txt").write_text(f"{type(e).__name__}: {e}\n")
        return {"setting": setting, "model": model, "seed": seed, "error": f"{type(e).__name__}: {e}"}
    saved = json.loads(done.read_text())
    saved |= {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}
    done.write_text(json.dumps(saved) + "\n")
    return {"setting": setting, "model": model, "seed": seed, "reused": False}


def collect(runs: Path, setting: str) -> dict[str, list[dict[str, Any]]]:
    """Every finished run of a setting, by model (reads the run folders, so partial benchmarks can be summarised)."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for done in sorted((runs / setting).glob("*_seed*/results.json")):
        r = json.loads(done.read_text())
        if r.get("status") in ("completed", "early_stopped"):
            by_model.setdefault(done.parent.name.rsplit("_seed", 1)[0], []).append(r)
    return by_model


def mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    m = float(np.mean(values))
    digits = 3 if abs(m) < 2 else 2
    return f"{m:.{digits}f}" if len(values) == 1 else f"{m:.{digits}f} ± {float(np.std(values, ddof=1)):.{digits}f}"


def mosei_floor(store: Path) -> dict[str, Any]:
    """The floor a MOSEI model must beat: a ridge probe on mean-pooled MiniLM word vectors (bench/text_benchmarks'
    probe), its alpha chosen by 5-fold cross-validation on train (valid is the reported split, never chosen on)."""
    from sklearn.linear_model import RidgeCV

    from bench.text_benchmarks import pooled
    from mmolre.metrics import sentiment_regression_metrics

    (Xtr, tr), (Xva, va) = pooled(store, "train"), pooled(store, "valid")
    ridge = RidgeCV(alphas=(0.1, 0.3, 1, 3, 10, 30), cv=5, scoring="neg_mean_absolute_error").fit(Xtr, tr.sentiment)
    metrics = sentiment_regression_metrics(ridge.predict(Xva), va.sentiment.to_numpy(), resamples=1000)
    return {"alpha": float(ridge.alpha_), "valid": {"sentiment": metrics}}


def floor_row(floor: dict[str, Any], split: str) -> str:
    m = floor[split]["sentiment"]
    ci = m.get("non0_acc2_ci")
    cells = [f"{float(m[k]) * (1 if k in ('mae', 'corr') else 100):.{3 if k in ('mae', 'corr') else 2}f}" for k in HEADLINE]
    return (f"| ridge probe (alpha {floor['alpha']:g}) | – | " + " | ".join(cells)
            + f" | {ci and f'[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]'} | {m.get('n')} ({m.get('non0_n')}) | – | – | – |")


def summarise(runs: Path, setting: str, floor: dict[str, Any] | None = None) -> tuple[list[str], dict[str, Any]]:
    split = SETTINGS[setting]["report"]
    lines = [f"### {setting} ({split}; mean ± sample std over seeds, ddof=1)", "",
             "| model | seeds | " + " | ".join(HEADLINE) + " | Non0 Acc-2 95% CI (seed 0) | n (non0) | params | CPU s/run | MMSA published Non0 |",
             "|" + "---|" * (len(HEADLINE) + 7)]
    table: dict[str, Any] = {}
    for model, rs in sorted(collect(runs, setting).items(), key=lambda kv: ZOO.index(kv[0]) if kv[0] in ZOO else 99):
        s = [r[split]["sentiment"] for r in rs]
        cols = {k: [float(x[k]) * (1 if k in ("mae", "corr") else 100) for x in s if x.get(k) is not None] for k in HEADLINE}  # accuracies in %
        first = min(rs, key=lambda r: r["config"]["seed"])[split]["sentiment"]
        ci = first.get("non0_acc2_ci")
        cpu = [r["cpu_s"] for r in rs if "cpu_s" in r]
        params = rs[0]["parameters"]["total"] if isinstance(rs[0]["parameters"], dict) else rs[0]["parameters"]
        table[model] = {"seeds": [r["config"]["seed"] for r in rs], "metrics": cols, "non0_acc2_ci_seed0": ci,
                        "n": first.get("n"), "non0_n": first.get("non0_n"), "params": params, "cpu_s": cpu}
        lines.append(f"| {model} | {len(rs)} | " + " | ".join(mean_sd(cols[k]) for k in HEADLINE)
                     + f" | {ci and f'[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]'} | {first.get('n')} ({first.get('non0_n')}) | {params:,} | "
                     + (f"{np.mean(cpu):.0f}" if cpu else "–") + f" | {MMSA_PUBLISHED.get(model, '–') if setting == 'mosi_ft' else '–'} |")
    if floor is not None:
        lines.append(floor_row(floor, split))
        table["ridge_probe"] = floor
    return lines, table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="every registered model beside MMoLRE on MOSI and MOSEI, several seeds")
    ap.add_argument("--work", type=Path, default=Path("/tmp/zoo"))
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--models", nargs="+", default=ZOO)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--mosei-train", type=int, default=None, help="MOSEI: train on this many train segments (seeded)")
    ap.add_argument("--summarise", action="store_true", help="only print the table of the runs already finished")
    args = ap.parse_args(argv)
    runs = args.work / ("runs" if args.mosei_train is None else f"runs_mosei_train{args.mosei_train}")
    if not args.summarise:
        if not DATA.is_dir():
            sys.exit(f"{DATA}: the shared data folder is missing")
        args.work.mkdir(parents=True, exist_ok=True)
        stores = {s: str(build_store(SETTINGS[s]["store"], args.work, args.mosei_train)) for s in args.settings}
        jobs = [(s, stores[s], m, seed, str(runs)) for s in args.settings for seed in args.seeds for m in args.models]
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with ProcessPoolExecutor(max_workers=args.jobs, max_tasks_per_child=1) as pool:
            for r in pool.map(run_one, *zip(*jobs, strict=True)):
                print(json.dumps(r), file=sys.stderr, flush=True)
    report, tables = [], {}
    mosei = [s for s in args.settings if SETTINGS[s]["store"] == "mosei_text"]
    floor = mosei_floor(build_store("mosei_text", args.work, args.mosei_train)) if mosei else None  # once: one store
    floors = dict.fromkeys(mosei, floor)
    for s in args.settings:
        lines, tables[s] = summarise(runs, s, floors.get(s))
        report += lines + [""]
    print("\n".join(report))
    print(json.dumps({"settings": {s: SETTINGS[s] for s in args.settings}, "model_train": MODEL_TRAIN, "tables": tables}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
