"""MELD: does a plain `mmolre train --store` (every default) beat the store's probe floor?

Builds bench/text_benchmarks.py's MELD text store (train, and dev as valid) under --work, scores its logistic
probe (the floor; C chosen on dev, so an optimistic one), then runs `mmolre train --store STORE --out WORK/plain`
with no settings but the seed, for each seed, and prints each run and their mean ± sample std (ddof=1) beside the
floor on dev, then one JSON line.

    MMOLRE_DATA=../shared/data .venv/bin/python bench/meld_plain_train.py --work /tmp/meldcheck --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import text_benchmarks as tb  # noqa: E402 - after the path


def plain_train(store: Path, out: Path, seed: int) -> dict:
    """`mmolre train --store STORE --out OUT --seed N`, in its own process; its results.json (reused when done)."""
    done = out / "results.json"
    if not done.is_file():
        with open(out.with_suffix(".log"), "w") as log:
            subprocess.run([sys.executable, "-m", "flows.cli", "train", "--store", str(store), "--out", str(out),
                            "--seed", str(seed), "--set", "progress=false"], check=True, stdout=log, stderr=subprocess.STDOUT)
    return json.loads(done.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/meldcheck"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    t = time.time()
    store = tb.build_store("meld", args.work)
    print(f"store {store} ({time.time() - t:.0f} s)", flush=True)
    probe = {k: {m: v[m] for m in ("wf1", "acc", "C")} for k, v in tb.probe_meld(store)["valid"].items()}
    runs = {}
    for seed in args.seeds:
        t = time.time()
        r = plain_train(store, args.work / f"plain_seed{seed}", seed)
        runs[seed] = {k: {m: r["valid"][k][m] for m in ("wf1", "acc", "wf1_ci", "n")} for k in ("sentiment", "emotion")}
        runs[seed] |= {"select_metric": r["select_metric"], "best_epoch": r["best_epoch"], "wall_s": time.time() - t}
        for k in ("sentiment", "emotion"):
            ci = runs[seed][k]["wf1_ci"]
            print(f"seed {seed} {k}: plain train wF1 {100 * runs[seed][k]['wf1']:.2f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] "
                  f"(n = {runs[seed][k]['n']}; epoch {r['best_epoch']} by {r['select_metric']})", flush=True)
    for k in ("sentiment", "emotion"):
        wf1 = [100 * runs[s][k]["wf1"] for s in args.seeds]
        spread = f" ± {statistics.stdev(wf1):.2f}" if len(wf1) > 1 else ""
        print(f"{k}: plain train wF1 {statistics.mean(wf1):.2f}{spread} over {len(wf1)} seed(s) against the probe's "
              f"{100 * probe[k]['wf1']:.2f}")
    print(json.dumps({"probe": probe, "plain": runs, "defaults": r["defaults"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
