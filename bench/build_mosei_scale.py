"""Benchmark: build a CMU-MOSEI-sized store from synthetic .csd files shaped like the SDK release.

    python bench/build_mosei_scale.py --scale small
    python bench/build_mosei_scale.py --scale full      # 3,300 videos, ~23,000 segments, ~20 GB of .csd

The files are written with h5py directly in the SDK's layout (labels 7-d, words with `sp` tokens at 2.5/s,
COVAREP 74-d at 100 Hz, FACET 35-d at 30 Hz), with the release's faults: ids missing from FACET, labelled videos
in no fold, fold ids without labels, -inf in COVAREP. The store is built by `build_sdk` on a 2-worker Dask
LocalCluster (or a process pool). Peak RSS is the sum over this process and all its children, sampled with
psutil every 0.2 s. The last line printed is one JSON object with the figures.
Targets at full scale: peak RSS <= 2 GB, wall time < 30 min.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.csd import COVAREP_DIMS, SDK_METADATA_KEYS  # noqa: E402
from pipelines.recipes.sdk import build_sdk  # noqa: E402

SCALES = {
    # videos, mean segments per video, video seconds (min, max)
    "small": (120, 7.0, (40.0, 80.0)),
    "full": (3300, 7.0, (120.0, 240.0)),
}
WORD_RATE = 2.5
SILENCE_SHARE = 0.15


class RssSampler:
    """Peak of the summed RSS of this process and all its descendants."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        total, n = 0, 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
                n += 1
            except psutil.Error:
                continue
        if total > self.peak:
            self.peak, self.peak_processes = total, n

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _metadata(group: h5py.Group, root: str, dims: list[str], description: str) -> None:
    meta = {k: "synthetic" for k in SDK_METADATA_KEYS}
    meta.update({"root name": root, "computational sequence description": description, "dataset name": "CMU-MOSEI",
                 "computational sequence version": "1.0", "alignment compatible": True, "dimension names": dims})
    mg = group.create_group("metadata")
    for k, v in meta.items():
        ds = mg.create_dataset(k, (1,), dtype=h5py.string_dtype())
        ds[0] = json.dumps(v)


def generate(folder: Path, scale: str, seed: int = 0) -> dict:
    """Write the synthetic release into `folder`; returns the counts it contains."""
    n_videos, seg_mean, (dur_lo, dur_hi) = SCALES[scale]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    vids = [f"v{i:05d}_{rng.integers(1 << 30):08x}" for i in range(n_videos)]
    durations = rng.uniform(dur_lo, dur_hi, n_videos)
    pool = rng.normal(size=(1 << 22,)).astype(np.float32)  # 16 MB of values, windows of it fill the features

    def values(n: int, d: int) -> np.ndarray:
        start = int(rng.integers(0, pool.size - n * d)) if pool.size > n * d else 0
        need = n * d
        flat = pool[start : start + need] if pool.size >= start + need else np.resize(pool, need)
        return flat.reshape(n, d)

    no_fold = set(vids[:: 100])  # ~1% labelled but in no fold
    no_facet = set(vids[7::90])  # ~1% missing from FACET
    n_segments = 0
    files = {
        "labels": h5py.File(folder / "CMU_MOSEI_Labels.csd", "w"),
        "words": h5py.File(folder / "CMU_MOSEI_TimestampedWords.csd", "w"),
        "covarep": h5py.File(folder / "CMU_MOSEI_COVAREP.csd", "w"),
        "facet": h5py.File(folder / "CMU_MOSEI_VisualFacet42.csd", "w"),
    }
    roots = {"labels": "All Labels", "words": "words", "covarep": "COVAREP", "facet": "FACET 4.2"}
    data = {k: f.create_group(roots[k]).create_group("data") for k, f in files.items()}
    try:
        for vid, dur in zip(vids, durations, strict=True):
            # Labelled segments: 3-12 s each, in order, with gaps, inside the video.
            k = max(1, int(rng.poisson(seg_mean)))
            lengths = rng.uniform(3.0, 12.0, k)
            while lengths.sum() > 0.9 * dur:
                lengths *= 0.8
            gaps = rng.dirichlet(np.ones(k + 1)) * (dur - lengths.sum())
            starts = np.cumsum(gaps[:-1]) + np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
            segs = np.stack([starts, starts + lengths], axis=1)
            labels = np.column_stack([rng.uniform(-3, 3, k), rng.uniform(0, 3, (k, 6))]).astype(np.float32)
            g = data["labels"].create_group(vid)
            g.create_dataset("features", data=labels)
            g.create_dataset("intervals", data=segs)
            n_segments += k
            # Words at 2.5/s over the whole video, some of them silence tokens.
            n_w = int(dur * WORD_RATE)
            edges = np.sort(rng.uniform(0, dur, n_w + 1))
            tokens = np.where(rng.random(n_w) < SILENCE_SHARE, b"sp", np.array([b"word%d" % (i % 97) for i in range(n_w)]))
            g = data["words"].create_group(vid)
            g.create_dataset("features", data=tokens.reshape(-1, 1).astype("S8"))
            g.create_dataset("intervals", data=np.stack([edges[:-1], edges[1:]], axis=1))
            # COVAREP at 100 Hz with a few -inf cells.
            n_c = int(dur * 100)
            t = np.arange(n_c + 1) / 100.0
            cov = values(n_c, 74).copy()
            cov[rng.integers(0, n_c, 3), rng.integers(0, 74, 3)] = -np.inf
            g = data["covarep"].create_group(vid)
            g.create_dataset("features", data=cov)
            g.create_dataset("intervals", data=np.stack([t[:-1], t[1:]], axis=1))
            if vid not in no_facet:
                n_f = int(dur * 30)
                t = np.arange(n_f + 1) / 30.0
                g = data["facet"].create_group(vid)
                g.create_dataset("features", data=values(n_f, 35))
                g.create_dataset("intervals", data=np.stack([t[:-1], t[1:]], axis=1))
        _metadata(files["labels"][roots["labels"]], roots["labels"], ["sentiment", "happy", "sad", "anger", "surprise", "disgust", "fear"], "labels")
        _metadata(files["words"][roots["words"]], roots["words"], ["word"], "words")
        _metadata(files["covarep"][roots["covarep"]], roots["covarep"], list(COVAREP_DIMS), "COVAREP")
        _metadata(files["facet"][roots["facet"]], roots["facet"], [f"facet_{i}" for i in range(35)], "FACET 4.2")
    finally:
        for f in files.values():
            f.close()
    in_fold = [v for v in vids if v not in no_fold]
    n = len(in_fold)
    folds = {"train": in_fold[: int(0.7 * n)] + ["never_labelled_1"], "valid": in_fold[int(0.7 * n) : int(0.8 * n)],
             "test": in_fold[int(0.8 * n) :] + ["never_labelled_2"]}
    (folder / "folds.json").write_text(json.dumps(folds))
    return {"videos": n_videos, "labelled_segments": n_segments, "videos_in_no_fold": len(no_fold),
            "videos_missing_facet": len(no_facet), "hours": round(float(durations.sum()) / 3600, 1)}


def _store_target(args: argparse.Namespace, work: Path) -> Path | str:
    """Where the store goes: WORKDIR/store, or `--store URL` (its bucket served by moto in-process with --moto)."""
    if args.store is None:
        return work / "store"
    if args.moto:
        import os
        import socket

        from moto.server import ThreadedMotoServer

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()  # a daemon thread
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"})
        from feature_schemas.storage import url_filesystem

        fs, path = url_filesystem(args.store)
        fs.mkdir(path.split("/", 1)[0])
    from feature_schemas.storage import url_filesystem

    fs, path = url_filesystem(args.store)
    if fs.find(path):
        fs.rm(path, recursive=True)  # a fresh build each run, as the local folder is removed
    return args.store


def _store_label(store: Path | str, args: argparse.Namespace) -> str:
    return ("moto in-process " if args.moto else "") + str(store) if isinstance(store, str) else "local disk"


def _store_bytes(store: Path | str) -> int:
    if isinstance(store, str):
        from feature_schemas.storage import url_filesystem

        fs, path = url_filesystem(store)
        fs.invalidate_cache()
        return int(fs.du(path))
    return sum(p.stat().st_size for p in store.rglob("*") if p.is_file())


def _arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="small")
    ap.add_argument("--workdir", type=Path, default=None, help="where the .csd files and the store go (default: a temp dir, removed)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--executor", choices=["dask", "processes"], default="dask")
    ap.add_argument("--batch-videos", type=int, default=4)
    ap.add_argument("--units-per-shard", type=int, default=16)
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--store", default=None,
                    help="build into this URL (s3://bucket/prefix, ...; endpoint and credentials from the environment) "
                         "instead of WORKDIR/store; with --moto, an S3 API started in this process (objects in memory)")
    ap.add_argument("--moto", action="store_true", help="serve --store's bucket from moto in this process")
    return ap.parse_args()


def main() -> None:
    args = _arguments()

    work = args.workdir or Path(tempfile.mkdtemp(prefix=f"mosei_{args.scale}_"))
    csd_dir, store = work / "csd", _store_target(args, work)
    try:
        t0 = time.perf_counter()
        if not (csd_dir / "folds.json").is_file():
            counts = generate(csd_dir, args.scale)
        else:
            counts = {"reused": str(csd_dir)}
        gen_s = time.perf_counter() - t0
        input_bytes = sum(p.stat().st_size for p in csd_dir.glob("*.csd"))
        print(f"inputs: {counts} {input_bytes / 1e9:.2f} GB in {gen_s:.0f} s", file=sys.stderr, flush=True)
        if not isinstance(store, str):
            shutil.rmtree(store, ignore_errors=True)

        with RssSampler() as rss:
            t1 = time.perf_counter()
            if args.executor == "dask":
                from distributed import Client, LocalCluster

                with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, Client(cluster) as client:
                    result = build_sdk(csd_dir, store, "mosei", folds=csd_dir / "folds.json", executor=client,
                                       batch_videos=args.batch_videos, units_per_shard=args.units_per_shard, progress=False)
            else:
                from concurrent.futures import ProcessPoolExecutor

                with ProcessPoolExecutor(args.workers) as pool:
                    result = build_sdk(csd_dir, store, "mosei", folds=csd_dir / "folds.json", executor=pool,
                                       batch_videos=args.batch_videos, units_per_shard=args.units_per_shard, progress=False)
            build_s = time.perf_counter() - t1

        from feature_schemas import validate

        t2 = time.perf_counter()
        try:
            report = validate(store, check_files=False)
        except Exception as e:  # noqa: BLE001 - a reader without URL support yet: the build figures still stand
            print(f"validate: {type(e).__name__}: {e}", file=sys.stderr)
            report = None
        validate_s = time.perf_counter() - t2
        m = result.manifest.report
        out = {
            "bench": "build_mosei_scale",
            "scale": args.scale,
            "executor": f"{args.executor} x{args.workers}",
            "videos": counts.get("videos"),
            "hours_of_video": counts.get("hours"),
            "input_gb": round(input_bytes / 1e9, 2),
            "generate_s": round(gen_s, 1),
            "segments": result.n_segments,
            "failures": result.n_failures,
            "wall_s": round(build_s, 1),
            "segments_per_s": round(result.n_segments / build_s, 1),
            "peak_rss_mb": round(rss.peak / 2**20),
            "processes_at_peak": rss.peak_processes,
            "store": _store_label(store, args),
            "store_mb": round(_store_bytes(store) / 2**20, 1),
            "valid": report.ok if report is not None else None,
            "validate_s": round(validate_s, 1),
            "n_ids_missing": m.get("n_ids_missing"),
            "n_labelled_videos_in_no_fold": m.get("n_labelled_videos_in_no_fold"),
            "nonfinite_values_covarep": m.get("counters", {}).get("nonfinite_values.covarep"),
            "targets": {"peak_rss_mb": 2048, "wall_s": 1800},
        }
        print(json.dumps(out), flush=True)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
