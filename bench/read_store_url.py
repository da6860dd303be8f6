"""Reading a store from object storage vs local disk: one training epoch through StoreDataset, a words-only
projection, and validate, with the bytes each fetched from the S3 API.

    python bench/read_store_url.py [--train 3000]

Starts moto's S3 server on 127.0.0.1 in this process (so the server's work shares this process's CPU: an upper
bound on the overhead), writes a synthetic MOSEI-shaped store locally, uploads it, and reads both.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _count_ranges() -> dict[str, int]:
    """Bytes and requests of every ranged GET s3fs makes (how much a read fetched, not how long it took)."""
    import s3fs

    stats = {"requests": 0, "bytes": 0}
    fetch = s3fs.core.S3File._fetch_range

    def counted(self: Any, start: int, end: int) -> bytes:
        stats["requests"] += 1
        stats["bytes"] += end - start
        return fetch(self, start, end)

    s3fs.core.S3File._fetch_range = counted
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=3000, help="train segments (valid and test: 200 each)")
    args = ap.parse_args()
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": endpoint})
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    import s3fs
    import torch

    from feature_schemas import Store, validate
    from mmolre.data import StoreDataset, make_loader
    from mmolre.synthetic import SyntheticSpec, write_synthetic_store
    from mmolre.tasks import infer_tasks

    torch.set_num_threads(1)
    stats = _count_ranges()
    try:
        local = write_synthetic_store(Path(tempfile.mkdtemp()) / "store", SyntheticSpec(
            sizes={"train": args.train, "valid": 200, "test": 200}, dims={"text": 300, "audio": 74}, rows_per_shard=500,
            row_group_rows=100, words=(5, 40)))
        train_mb = sum(p.stat().st_size for p in (local / "aligned" / "train").glob("*.parquet")) / 1e6
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
        fs.mkdir("bench")
        fs.put(str(local), "bench/store", recursive=True)
        tasks = infer_tasks(Store(local))
        print(f"aligned/train: {train_mb:.1f} MB in row groups of 100 segments")
        for name, where in (("local", local), ("s3", "s3://bench/store")):
            dataset = StoreDataset(where, "train", ["text", "audio"], tasks)
            for what, run in (("epoch", lambda d=dataset: sum(len(b["segment_id"]) for b in make_loader(d, 32))),
                              ("words only", lambda w=where: Store(w).aligned(columns=["segment_id", "words"]).num_rows),
                              ("validate", lambda w=where: validate(w).ok)):
                stats.update(requests=0, bytes=0)
                t = time.perf_counter()
                result = run()
                fetched = "" if name == "local" else (f", {stats['bytes'] / 1e6:.1f} MB in {stats['requests']} ranged GETs"
                                                      if stats["requests"] else ", each object downloaded once, whole")
                print(f"{name:5} {what:10} {time.perf_counter() - t:6.2f} s ({result}){fetched}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
