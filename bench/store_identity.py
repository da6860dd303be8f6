"""Proof of "no behaviour change": the same inputs built by a git revision and by the working tree give Parquet
files with the same sha256 (and the same shard keys).

    python bench/store_identity.py --ref a3bec01
    python bench/store_identity.py --ref main --cases csd text

The revision is checked out into a temporary `git worktree` (removed at the end) and every build runs in a
subprocess with PYTHONPATH pointing at the tree under test, inline (no workers), on inputs written once and
shared by both, so the units' input keys (paths, sizes, mtimes) are the same. Cases:

- `csd`: a synthetic MOSEI-shaped .csd release (bench/build_mosei_scale.py's generator, its faults included:
  ids missing from FACET, labelled videos in no fold, -inf in COVAREP) through `build_sdk`;
- `csd-fixture`: the test suite's small release (bench/csd_fixtures.py: GloVe, OpenFace, damaged rows);
- `text`: a text-only manifest, `--segments` rows spread over CMU-MOSI's label.csv, all three splits
  (`mmolre build videos`, words untimed, the packaged MiniLM encoder);
- `utterance`: CMU-MOSI's bc-LSTM release (`mmolre build mosi-utterance`, 2,199 segments);
- `video`: real media from `../shared/data` through every extractor (`mmolre build videos`): the MOSI clip and
  its transcript (forced alignment), the MOSI speech-only wav, a CREMA-D clip, and a face clip without a
  transcript (Whisper); audio (openSMILE eGeMAPS and its functionals), face (mediapipe), text;
- `mmsa`: an MMSA pickle exported (by the working tree) from the `csd` store, imported (`mmolre build mmsa`).

Prints one line per case and, last, one JSON object; exit status 0 only when every case is identical.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMOLRE_DATA", HERE.parent / "shared" / "data"))
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
CASES = ("csd", "csd-fixture", "text", "utterance", "mmsa", "video")

# Builds that go through the Python API (the CLI takes no fold file); the same calls exist in every revision.
SDK_BUILD = """
import sys
from pipelines.recipes.sdk import build_sdk
csd_dir, store, folds = sys.argv[1], sys.argv[2], sys.argv[3]
build_sdk(csd_dir, store, "mosei", folds=None if folds == "-" else folds, progress=False)
"""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parquet_digests(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): sha256(p) for p in sorted(store.rglob("*.parquet"))}


def shard_keys(store: Path) -> dict[str, str]:
    return json.loads((store / "manifest.json").read_text())["build"]["shards"]


def run(tree: Path, args: list[str], log: Path) -> float:
    """One build in a subprocess with `tree` first on the path; returns its wall time."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, *args], cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode not in (0, 3):  # 3: built, with failure rows (the inputs' faults)
        raise SystemExit(f"{' '.join(args[:4])} failed in {tree} (exit {proc.returncode}); see {log}")
    return time.perf_counter() - t0


def make_inputs(work: Path, cases: list[str], segments: int) -> dict[str, Path]:
    """The inputs every revision reads, written once (by the working tree's helpers)."""
    sys.path.insert(0, str(HERE))
    paths: dict[str, Path] = {}
    if "csd" in cases or "mmsa" in cases:
        from bench.build_mosei_scale import generate

        paths["csd"] = work / "inputs" / "mosei_shaped"
        if not (paths["csd"] / "folds.json").is_file():
            generate(paths["csd"], "small")
    if "csd-fixture" in cases:
        from bench.csd_fixtures import write_mosei_fixture

        paths["csd-fixture"] = work / "inputs" / "csd_fixture"
        if not paths["csd-fixture"].is_dir():
            paths["csd-fixture"].mkdir(parents=True)
            with contextlib.redirect_stdout(sys.stderr):  # the SDK's own messages: not this script's output
                write_mosei_fixture(paths["csd-fixture"])
    if "text" in cases:
        paths["text"] = work / "inputs" / "mosi_text.csv"
        paths["text"].parent.mkdir(parents=True, exist_ok=True)
        with open(DATA / "mosi" / "label.csv", newline="") as f:
            rows = list(csv.reader(f))
        step = max(1, (len(rows) - 1) // max(1, segments))  # spread over the file: it is sorted by split
        with open(paths["text"], "w", newline="") as f:
            csv.writer(f).writerows([rows[0], *rows[1::step][:segments]])
    if "utterance" in cases:
        paths["utterance"] = DATA / "mosi" / "utterance"
    if "video" in cases:
        paths["video"] = work / "inputs" / "videos.jsonl"
        paths["video"].parent.mkdir(parents=True, exist_ok=True)
        paths["video"].write_text("\n".join(json.dumps(r) for r in video_rows()) + "\n")
    return paths


def video_rows() -> list[dict]:
    """Manifest rows for the `video` case: real media of every kind the video recipe reads."""
    with open(DATA / "mosi" / "label.csv", newline="") as f:
        text = {r["id"]: r["text"] for r in csv.DictReader(f)}
    rows = []
    for path in (DATA / "mosi" / "raw").iterdir():
        rows.append({"video_path": str(path), "segment_id": path.stem, "transcript": text.get(path.stem),
                     "split": "train"})
    for path in (DATA / "cremad" / "1001_DFA_ANG_XX.flv", DATA / "faces" / "single_face.mp4"):
        rows.append({"video_path": str(path), "segment_id": path.stem, "transcript": None, "split": "test"})
    return sorted(rows, key=lambda r: r["segment_id"])


def build_case(case: str, tree: Path, store: Path, inputs: dict[str, Path], log: Path) -> float:
    shutil.rmtree(store, ignore_errors=True)
    cli = ["-m", "flows.cli"]
    common = ["--out", str(store), "--workers", "0", "--quiet"]
    if case == "csd":
        return run(tree, ["-c", SDK_BUILD, str(inputs["csd"]), str(store), str(inputs["csd"] / "folds.json")], log)
    if case == "csd-fixture":
        return run(tree, ["-c", SDK_BUILD, str(inputs["csd-fixture"]), str(store), "-"], log)
    if case == "text":
        return run(tree, [*cli, "build", "videos", "--input", str(inputs["text"]), *common], log)
    if case == "video":
        return run(tree, [*cli, "build", "videos", "--input", str(inputs["video"]), *common], log)
    if case == "utterance":
        return run(tree, [*cli, "build", "mosi-utterance", "--input", str(inputs["utterance"]), *common], log)
    if case == "mmsa":
        return run(tree, [*cli, "build", "mmsa", "--input", str(inputs["mmsa"]), *common], log)
    raise ValueError(case)


def export_pickle(work: Path, csd_store: Path) -> Path:
    """An MMSA pickle of the working tree's `csd` store (audio and vision, aligned), for the `mmsa` case."""
    out = work / "inputs" / "aligned_50.pkl"
    if not out.is_file():
        run(HERE, ["-m", "flows.cli", "export", "mmsa", "--store", str(csd_store), "--out", str(out)],
            work / "export_mmsa.log")
    return out


def compare(a: Path, b: Path) -> dict:
    da, db = parquet_digests(a), parquet_digests(b)
    differ = sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))
    keys_equal = shard_keys(a) == shard_keys(b)
    return {"files": len(da), "identical": not differ and keys_equal and bool(da), "differ": differ[:10],
            "shard_keys_equal": keys_equal}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default="a3bec01", help="git revision to compare the working tree with")
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    ap.add_argument("--segments", type=int, default=400, help="rows of the text-only manifest")
    ap.add_argument("--work", type=Path, default=None, help="inputs, stores and logs (default: a temp dir, removed)")
    args = ap.parse_args()

    work = (args.work or Path(tempfile.mkdtemp(prefix="store_identity_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ref_tree = work / "ref"
    rev = subprocess.run(["git", "rev-parse", "--short", args.ref], cwd=HERE, capture_output=True, text=True,
                         check=True).stdout.strip()
    subprocess.run(["git", "worktree", "add", "--detach", "--force", str(ref_tree), rev], cwd=HERE, check=True,
                   capture_output=True)
    results: dict[str, dict] = {}
    try:
        inputs = make_inputs(work, args.cases, args.segments)
        order = [c for c in CASES if c in args.cases]
        if "mmsa" in order and "csd" not in order:
            order.insert(0, "csd")
        for case in order:
            stores = {side: work / side / case for side in ("ref", "tree")}
            times = {}
            for side, tree in (("ref", ref_tree), ("tree", HERE)):
                if case == "mmsa":
                    inputs["mmsa"] = export_pickle(work, work / "tree" / "csd")
                stores[side].parent.mkdir(parents=True, exist_ok=True)
                times[side] = round(build_case(case, tree, stores[side], inputs, work / f"{side}_{case}.log"), 1)
            results[case] = {**compare(stores["ref"], stores["tree"]), "wall_s": times}
            r = results[case]
            print(f"{case}: {r['files']} Parquet files, {'identical' if r['identical'] else 'DIFFERENT'} "
                  f"(shard keys {'equal' if r['shard_keys_equal'] else 'differ'}; {rev} {times['ref']} s, "
                  f"working tree {times['tree']} s)" + (f"; differ: {r['differ']}" if r["differ"] else ""), flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(ref_tree)], cwd=HERE, capture_output=True)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    ok = bool(results) and all(r["identical"] for r in results.values())
    print(json.dumps({"bench": "store_identity", "ref": rev, "identical": ok, "cases": results}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
