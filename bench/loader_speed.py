"""Reading speed of the training data loader against a plain pyarrow scan of the same columns, in one run.

A synthetic word-aligned store (MOSI-like: text 384 + audio 25 per word, 8-40 words a segment; one row group per
file of 256 rows, as the store writer writes a shard) is read three ways, each over whole epochs, interleaved
(each first in turn) so all see the same machine load:

  * `scan`: `pyarrow.parquet.ParquetFile.iter_batches` over every file of the split, the columns the loader reads
    (segment id, each set's vectors and coverage), each batch turned into numpy arrays (`column_vectors`), nothing else;
  * `loader`: `mmolre.data.make_loader(StoreDataset(..., shuffle=True))` with the training batch size, the same
    columns, every batch padded and collated into tensors (what a training step receives);
  * `loader_reopen`: the same loader with its per-process footer cache emptied before every unit (how it read
    before: every unit of every epoch read its file's footer again; at a URL, one more ranged GET a unit).

    .venv/bin/python bench/loader_speed.py                   # 6,000 segments, 3 epochs each
    .venv/bin/python bench/loader_speed.py --segments 1500 --epochs 2
    .venv/bin/python bench/loader_speed.py --url             # the store on moto's S3 server (ranged GETs counted)
Prints samples/s of each (median over epochs) and the ratios scan / loader (target <= 1.5), the same from CPU
seconds per epoch (steadier on a shared machine), then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(root: Path, segments: int, rows_per_shard: int, row_group_rows: int) -> Path:
    from mmolre.synthetic import SyntheticSpec, write_synthetic_store

    spec = SyntheticSpec(dims={"text": 384, "audio": 25}, sizes={"train": segments}, words=(8, 40),
                         rows_per_shard=rows_per_shard, row_group_rows=row_group_rows)
    return write_synthetic_store(root / "store", spec)


def scan(store: Path | str, columns: list[str], sets: list[str]) -> int:
    from feature_schemas import Store, column_lists, column_vectors, coverage_column

    n = 0
    s = Store(store)
    for path in s.files("aligned", "train"):  # a plain pyarrow ParquetFile (over s3fs, no read-ahead, for a URL)
        for batch in s.open_parquet(path).iter_batches(batch_size=256, columns=columns):
            batch.column("segment_id").to_pylist()
            for m in sets:
                column_vectors(batch.column(m))
                column_lists(batch.column(coverage_column(m)))
            n += batch.num_rows
    return n


def loader_epoch(ds: Any, epoch: int, batch_size: int, reopen: bool) -> int:
    from mmolre.data import make_loader

    ds.set_epoch(epoch)
    if reopen:  # the old behaviour: no footer kept between units
        read_unit = ds._read_unit

        def fresh(u: Any) -> Any:
            ds._footers.clear()
            return read_unit(u)

        ds._read_unit = fresh
    n = 0
    for batch in make_loader(ds, batch_size):
        n += len(batch["segment_id"])
    if reopen:
        del ds._read_unit
    return n


def serve(store: Path) -> dict[str, int]:
    """Start moto's S3 server here, upload the store to s3://bench/loader, count ranged GETs from now on."""
    import logging
    import os
    import socket

    import s3fs
    from moto.server import ThreadedMotoServer

    from bench.read_store_url import _count_ranges

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": f"http://127.0.0.1:{port}"})
    fs.mkdir("bench")
    fs.put(str(store) + "/", "bench/loader/", recursive=True)
    return _count_ranges()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rows-per-shard", type=int, default=256, help="rows per file (the writer: one shard per file)")
    ap.add_argument("--row-group-rows", type=int, default=256, help="rows per row group (the writer: one per shard)")
    ap.add_argument("--url", action="store_true", help="read the store from moto's S3 server (in this process)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from feature_schemas import Store
    from mmolre.data import StoreDataset
    from mmolre.tasks import TaskSpec

    with tempfile.TemporaryDirectory() as tmp:
        store: Path | str = build(Path(tmp), args.segments, args.rows_per_shard, args.row_group_rows)
        requests = serve(store) if args.url else None
        if args.url:
            store = "s3://bench/loader"
        sets = ["text", "audio"]
        ds, old = (StoreDataset(store, "train", sets, [TaskSpec("sentiment", "regression")], shuffle=True, seed=0)
                   for _ in range(2))  # `old` has its footers dropped before every unit: its own instance
        columns = [c for c in ds.columns]
        units = len(ds.units(1))
        rates: dict[str, list[float]] = {"scan": [], "loader": [], "loader_reopen": []}
        gets: dict[str, list[int]] = {k: [] for k in rates}
        cpu: dict[str, list[float]] = {k: [] for k in rates}  # this process's CPU seconds per epoch
        names = list(rates)
        for epoch in range(args.epochs):
            for name in names[epoch % 3:] + names[: epoch % 3]:  # each goes first in turn (what ran before matters)
                before = requests["requests"] if requests else 0
                t, c = time.perf_counter(), time.process_time()
                n = scan(store, columns, sets) if name == "scan" else loader_epoch(old if name == "loader_reopen" else ds, epoch, args.batch_size, name == "loader_reopen")
                rates[name].append(n / (time.perf_counter() - t))
                cpu[name].append(time.process_time() - c)
                gets[name].append(requests["requests"] - before if requests else 0)
                assert n == args.segments, (name, n)
        files = len(Store(store).files("aligned", "train"))
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["scan"] / med["loader"]
    for k, v in med.items():
        print(f"{k:14s} {v:10.1f} samples/s  (epochs: {', '.join(f'{r:.0f}' for r in rates[k])})"
              + (f"; ranged GETs per epoch {gets[k]}" if args.url else ""))
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    cpu_ratio = cpu_med["loader"] / cpu_med["scan"]
    print("CPU s per epoch (median): " + ", ".join(f"{k} {v:.3f}" for k, v in cpu_med.items())
          + f"; loader / scan = {cpu_ratio:.2f} (steadier than wall time when other processes share the cores)")
    print(f"scan / loader = {ratio:.2f} (target <= 1.5); loader / loader_reopen = {med['loader'] / med['loader_reopen']:.2f}; "
          f"{args.segments} segments, {files} files, {units} row-group units, columns {columns}")
    print(json.dumps({"url": args.url, "ranged_gets": gets if args.url else None, "segments": args.segments, "files": files, "units": units, "epochs": args.epochs,
                      "batch_size": args.batch_size, "samples_per_s": med, "per_epoch": rates,
                      "scan_over_loader": ratio, "cpu_s_per_epoch": cpu_med, "cpu_loader_over_scan": cpu_ratio, "loader_over_reopen": med["loader"] / med["loader_reopen"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
