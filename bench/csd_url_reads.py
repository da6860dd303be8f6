"""How many bytes h5py fetches from a .csd at a URL, per fsspec block size and cache (the choice behind
`feature_schemas.storage.INPUT_BLOCK_SIZE`): a COVAREP-shaped file of 100 videos x 3,000 rows (94 MB) on moto's
S3 server on 127.0.0.1; "plan" lists its entries and reads one shape (what planning does per file), "unit" reads
4 videos' intervals and 1,000 rows each (what one unit of the .csd stage does).

    python bench/csd_url_reads.py        # one line per setting; needs moto[server] and s3fs
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS = [(64 << 10, "blockcache"), (256 << 10, "blockcache"), (1 << 20, "blockcache"), (5 << 20, "readahead"),
            (50 << 20, "readahead")]  # 50 MiB read-ahead: s3fs's default


def main() -> int:
    from moto.server import ThreadedMotoServer

    import pipelines.csd as csd
    from bench.csd_fixtures import write_wide_covarep
    from feature_schemas import storage

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = write_wide_covarep(Path(tmp) / "cov.csd", videos=100, rows=3000)
            fs, _ = storage.url_filesystem("s3://bench-bucket/cov.csd")
            fs.mkdir("bench-bucket")
            fs.put_file(str(path), "bench-bucket/cov.csd")
            size = path.stat().st_size
        for block, cache in SETTINGS:
            def opener(url: str, block: int = block, cache: str = cache):  # noqa: ANN202
                f, key = storage.url_filesystem(url)
                extra = {"cache_options": {"maxblocks": storage.INPUT_MAX_BLOCKS}} if cache == "blockcache" else {}
                return f.open(key, "rb", block_size=block, cache_type=cache, **extra)

            csd.open_input = opener
            t0 = time.perf_counter()
            with csd.CsdFile("s3://bench-bucket/cov.csd") as c:
                ids = c.ids()
                c.dim()
                plan = c._remote.cache.total_requested_bytes
            t1 = time.perf_counter()
            with csd.CsdFile("s3://bench-bucket/cov.csd") as c:
                for v in ids[40:44]:
                    c.intervals(v)
                    c.features(v, 500, 1500)
                unit = c._remote.cache.total_requested_bytes
            t2 = time.perf_counter()
            print(f"{cache:10s} {block >> 10:6d} KiB  file {size / 1e6:.1f} MB  plan {plan / 1e6:6.2f} MB ({t1 - t0:.2f} s)"
                  f"  unit {unit / 1e6:6.2f} MB ({t2 - t1:.2f} s)")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
