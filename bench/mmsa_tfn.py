"""MMSA's TFN, trained by MMSA 2.2.1's own code on our `export mmsa` of the MOSI utterance store (issue 29).

The store is built by the real recipe from the bc-LSTM release (/work/shared/data/mosi/utterance), exported with
`pipelines.export.mmsa.write_mmsa` (aligned layout; the 4 segments without a continuous label are left out), and
read by MMSA's `MMDataLoader`; MMSA's `AMIO` TFN is trained by its `ATIO` trainer's `do_train` with MMSA's own
mosi defaults (early stopping on valid loss, patience 8) and scored by its `do_test`, as `MMSA_run` does (which
this cannot call: it runs `torch.cuda.set_device` even without a GPU). The reference is the store's ridge floor
on the same test split: MAE 0.950 (ridge on standardised text+audio+video, /work/shared/data/mosi/utterance/README.md).

    .venv/bin/python bench/mmsa_tfn.py [--seeds 1111 1112 1113] [--work DIR]
Prints one line per seed (MMSA's test metrics, n, a 95% bootstrap CI of the MAE), the mean ± sample std, then
one JSON line; exit 1 unless the mean test MAE is finite and within 0.05 of the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMOLRE_SHARED_DATA") or ROOT.parent / "shared" / "data")  # env: a worktree elsewhere
RIDGE_FLOOR_MAE = 0.950


def run_seed(pkl: Path, work: Path, seed: int) -> dict:
    import torch
    from MMSA.config import get_config_regression
    from MMSA.data_loader import MMDataLoader
    from MMSA.models import AMIO
    from MMSA.trains import ATIO
    from MMSA.utils import setup_seed

    args = get_config_regression("tfn", "mosi")
    args.update(custom_feature=str(pkl), feature_T="", feature_A="", feature_V="", device=torch.device("cpu"),
                train_mode="regression", model_save_path=str(work / f"tfn-{seed}.pth"), cur_seed=1)
    setup_seed(seed)
    loaders = MMDataLoader(args, 0)
    model, trainer = AMIO(args), ATIO().getTrain(args)
    trainer.do_train(model, loaders)
    model.load_state_dict(torch.load(args.model_save_path))
    res = trainer.do_test(model, loaders["test"], mode="TEST", return_sample_results=True)
    pred = np.asarray(res["SResults"], np.float64).reshape(-1)
    true = np.asarray(res["Labels"], np.float64).reshape(-1)
    err = np.abs(pred - true)
    boot = np.random.default_rng(0).choice(err, size=(2000, len(err))).mean(axis=1)
    return {"seed": seed, "n": len(err), "MAE": float(res["MAE"]), "MAE_ci95": [float(np.quantile(boot, 0.025)),
            float(np.quantile(boot, 0.975))], "Corr": float(res["Corr"]), "Non0_acc_2": float(res["Non0_acc_2"]),
            "Has0_acc_2": float(res["Has0_acc_2"]), "Mult_acc_7": float(res["Mult_acc_7"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1111])
    ap.add_argument("--work", default=None)
    ap.add_argument("--data", default=str(DATA))
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from pipelines.export.mmsa import write_mmsa
    from pipelines.recipes.mosi_utterance import build_mosi_utterance

    work = Path(a.work or tempfile.mkdtemp(prefix="mmsa_tfn_"))
    store = work / "store"
    if not (store / "manifest.json").is_file():
        build_mosi_utterance(Path(a.data) / "mosi" / "utterance", store, labels=Path(a.data) / "mosi" / "label.csv", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = write_mmsa(store, work / "mosi_utterance.pkl", text_bert=False)
    print(f"export: {report.segments} segments, {len(report.unlabeled)} left out without a label: {report.unlabeled}")
    rows = []
    for seed in a.seeds:
        r = run_seed(report.path, work, seed)
        rows.append(r)
        print(json.dumps(r))
    maes = [r["MAE"] for r in rows]
    spread = f" ± {statistics.stdev(maes):.3f}" if len(maes) > 1 else ""
    print(f"TFN (MMSA 2.2.1) test MAE {statistics.mean(maes):.3f}{spread} over {len(maes)} seed(s), n = {rows[0]['n']}; "
          f"ridge floor {RIDGE_FLOOR_MAE:.3f}; |difference| {abs(statistics.mean(maes) - RIDGE_FLOOR_MAE):.3f}")
    print(json.dumps({"model": "TFN (mmsa 2.2.1)", "seeds": a.seeds, "n_test": rows[0]["n"], "mae_mean": statistics.mean(maes),
                      "mae_std": statistics.stdev(maes) if len(maes) > 1 else None, "ridge_floor_mae": RIDGE_FLOOR_MAE,
                      "runs": rows}))
    return 0 if all(np.isfinite(maes)) and abs(statistics.mean(maes) - RIDGE_FLOOR_MAE) <= 0.05 else 1


if __name__ == "__main__":
    raise SystemExit(main())
