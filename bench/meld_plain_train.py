"""MELD: does a plain `mmolre train --store` (every default) beat the store's probe floor?

Builds bench/text_benchmarks.py's MELD text store (train, and dev as valid) under --work, scores its logistic
probe (the floor; C chosen on dev, so an optimistic one), then runs `mmolre train --store STORE --out WORK/plain`
with no settings and prints both on dev, then one JSON line.

    MMOLRE_DATA=../shared/data .venv/bin/python bench/meld_plain_train.py --work /tmp/meldcheck
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import text_benchmarks as tb  # noqa: E402 - after the path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/meldcheck"))
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    t = time.time()
    store = tb.build_store("meld", args.work)
    print(f"store {store} ({time.time() - t:.0f} s)", flush=True)
    probe = {k: {m: v[m] for m in ("wf1", "acc", "C")} for k, v in tb.probe_meld(store)["valid"].items()}
    t = time.time()
    with open(args.work / "plain.log", "w") as log:
        subprocess.run([sys.executable, "-m", "flows.cli", "train", "--store", str(store), "--out", str(args.work / "plain")],
                       check=True, stdout=log, stderr=subprocess.STDOUT)
    r = json.loads((args.work / "plain" / "results.json").read_text())
    plain = {k: {m: r["valid"][k][m] for m in ("wf1", "acc", "wf1_ci", "n")} for k in ("sentiment", "emotion")}
    for k in plain:
        ci = plain[k]["wf1_ci"]
        print(f"{k}: plain train wF1 {100 * plain[k]['wf1']:.2f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] (n = {plain[k]['n']}) "
              f"against the probe's {100 * probe[k]['wf1']:.2f}")
    print(json.dumps({"probe": probe, "plain": plain, "defaults": r["defaults"], "best_epoch": r["best_epoch"],
                      "wall_s": time.time() - t}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
