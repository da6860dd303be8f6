"""Reading and training from a store on object storage (issue 17, reader side), against a real S3 API on
127.0.0.1 (moto's server, tests/s3_fixtures.py).

Stores are built locally (the store writer and the synthetic writer), uploaded with s3fs, then read back through
the URL by `feature_schemas.Store`, `validate`, plain pyarrow, Hugging Face `datasets`, the training loader and the
`mmolre` CLI. The credentials are the fixture's; no test finds the secret in anything we write or print.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_schemas import ChecksumError, OutsideStoreError, Store, StoreError, sha256_file, validate
from tests.s3_fixtures import ENV as S3_ENV
from tests.s3_fixtures import S3, s3  # noqa: F401 (module fixture)
from tests.store_fixtures import TINY_ARCH, one_torch_thread, synthetic_store, writer_store  # noqa: F401 (autouse fixture)

REPO = Path(__file__).resolve().parents[1]
SECRET = S3_ENV["AWS_SECRET_ACCESS_KEY"]


def upload(s3: S3, local: Path, *prefix: str) -> str:  # noqa: F811 - `s3` is the fixture's value
    """Copy a local store to `s3://bucket/prefix` the way a user would (the writer side is another module's)."""
    url = s3.url(*prefix)
    s3.filesystem().put(str(local), url, recursive=True)
    return url


@pytest.fixture(autouse=True, scope="module")
def quiet_server() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request


def sort_rows(table: pa.Table) -> pa.Table:
    return table.sort_by("segment_id") if table.num_rows else table


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store written by the real store writer: shards of every table, a failures table, manifest with sizes."""
    return writer_store(tmp_path_factory.mktemp("writer") / "store", n_videos=9)


@pytest.fixture(scope="module")
def url(s3: S3, local: Path) -> str:  # noqa: F811
    return upload(s3, local, "writer")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a learnable signal for the training tests."""
    return synthetic_store(tmp_path_factory.mktemp("synthetic") / "store", "mosei",
                           sizes={"train": 64, "valid": 32, "test": 32})


@pytest.fixture(scope="module")
def synthetic_url(s3: S3, synthetic: Path) -> str:  # noqa: F811
    return upload(s3, synthetic, "synthetic")


def cli(*args: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=timeout)


def no_secret(*texts: str | bytes) -> None:
    for t in texts:
        assert (SECRET.encode() if isinstance(t, bytes) else SECRET) not in t


# -- Store(url) ---------------------------------------------------------------------------------------
def test_store_url_reads_the_same_rows_as_the_local_store(url: str, local: Path) -> None:
    remote, here = Store(url), Store(local)
    assert remote.remote and not here.remote
    assert remote.location == url == Store(url + "/").location
    assert remote.manifest_sha256 == sha256_file(local / "manifest.json")
    assert remote.splits() == here.splits() and remote.aligned_sets() == here.aligned_sets()
    assert sort_rows(remote.segments()).equals(sort_rows(here.segments()))
    for split in here.splits():
        assert sort_rows(remote.aligned(split)).equals(sort_rows(here.aligned(split)))
        streamed = pa.Table.from_batches(list(remote.iter_batches("aligned", split, batch_size=3)))
        assert sort_rows(streamed).equals(sort_rows(here.aligned(split)))
    assert remote.failures().num_rows == here.failures().num_rows
    sid = here.segments("train").column("segment_id")[0].as_py()
    a, b = remote.segment(sid), here.segment(sid)
    assert a.keys() == b.keys() and a["words"] == b["words"]
    assert all((a[k] == b[k]).all() for k in here.aligned_sets())
    # file:// is a local path, read by the operating system
    assert Store(f"file://{local}").segments().num_rows == here.segments().num_rows


def test_store_url_checks_sizes_always_and_sha256_when_asked(s3: S3, local: Path) -> None:  # noqa: F811
    url = upload(s3, local, "altered")
    fs = s3.filesystem()
    manifest = json.loads((local / "manifest.json").read_text())
    rel = next(r for r, e in sorted(manifest["files"].items()) if e["table"] == "aligned" and e["rows"])
    data = bytearray(fs.cat_file(f"{url}/{rel}"))
    data[len(data) // 2] ^= 0xFF  # same size, other bytes: only a hash sees it
    fs.pipe_file(f"{url}/{rel}", bytes(data))
    Store(url).segments()  # reading checks sizes from one listing; it hashes nothing
    with pytest.raises(ChecksumError, match=rf"{rel}: sha256 differs"):
        Store(url, verify=True)
    report = validate(url)
    assert not report.ok and any(rel in str(p) and "sha256 differs" in str(p) for p in report.problems)
    fs.pipe_file(f"{url}/{rel}", bytes(data[:-10]))  # truncated: the size check on every read catches it
    split = manifest["files"][rel]["split"]
    with pytest.raises(ChecksumError, match=rf"{url}/{rel}: sha256 differs .*size"):
        Store(url).aligned(split)
    fs.rm(f"{url}/{rel}")
    with pytest.raises(ChecksumError, match=rf"{rel}: file listed in the manifest is missing"):
        Store(url).aligned(split)


def test_validate_url(url: str, s3: S3, local: Path) -> None:  # noqa: F811
    report = validate(url)
    assert report.ok, str(report)
    stray = upload(s3, local, "stray")
    s3.filesystem().pipe_file(f"{stray}/aligned/train/extra.parquet", b"PAR1")
    problems = [str(p) for p in validate(stray).problems]
    assert problems == ["store: 'aligned/train/extra.parquet': file not in the manifest (globbing readers would read it too); remove it"]


def test_missing_store_and_bucket_are_named(s3: S3) -> None:  # noqa: F811
    with pytest.raises(StoreError, match=rf"^{s3.url('nothing-here')}: not a feature store \(no manifest.json\)$"):
        Store(s3.url("nothing-here"))
    with pytest.raises(StoreError, match=r"^s3://no-such-bucket-x/st: not a feature store .*bucket does not exist"):
        Store("s3://no-such-bucket-x/st")
    assert "no-such-bucket-x" in str(validate("s3://no-such-bucket-x/st"))


def test_credentials_in_a_url_and_bad_bucket_names_are_refused_without_echoing_them(s3: S3) -> None:  # noqa: F811
    with pytest.raises(StoreError, match=r"^s3://bucket/x: credentials in a URL are refused") as e:
        Store(f"s3://AKIDEXAMPLE:{SECRET}@bucket/x")
    assert SECRET not in str(e.value)
    with pytest.raises(StoreError, match=r'^s3://bad_bucket!/x: .*Invalid bucket name "bad_bucket!"$'):
        Store("s3://bad_bucket!/x")


def test_manifest_paths_outside_the_store_are_refused(s3: S3, local: Path) -> None:  # noqa: F811
    url = upload(s3, local, "escape")
    manifest = json.loads((local / "manifest.json").read_text())
    rel, entry = next(iter(sorted(manifest["files"].items())))
    manifest["files"]["../writer/" + rel] = manifest["files"].pop(rel)
    s3.filesystem().pipe_file(f"{url}/manifest.json", json.dumps(manifest).encode())
    with pytest.raises(OutsideStoreError, match=r"leads outside the store"):
        Store(url)
    assert any("leads outside the store" in str(p) for p in validate(url).problems)


# -- other readers ----------------------------------------------------------------------------------
def test_plain_pyarrow_reads_the_url_store(url: str, s3: S3, local: Path) -> None:  # noqa: F811
    from pyarrow import fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=s3.endpoint, scheme="http", access_key=S3_ENV["AWS_ACCESS_KEY_ID"],
                           secret_key=SECRET, region=S3_ENV["AWS_REGION"])
    key = url.removeprefix("s3://")
    table = pq.ParquetDataset(f"{key}/aligned/train", filesystem=fs).read()
    assert sort_rows(table.select(["segment_id", "words"])).equals(
        sort_rows(Store(local).aligned("train", columns=["segment_id", "words"])))


@pytest.mark.slow
def test_hugging_face_datasets_reads_the_url_store(url: str, s3: S3, local: Path, tmp_path: Path,  # noqa: F811
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    from datasets import load_dataset

    # `make test` exports HF_HUB_OFFLINE=1 (no model hub here), and datasets then refuses every remote URL, an S3
    # endpoint on 127.0.0.1 included; a user reading a store from object storage leaves it unset.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)

    d = load_dataset("parquet", data_files={"train": f"{url}/segments/train/*.parquet"}, split="train",
                     storage_options={"client_kwargs": {"endpoint_url": s3.endpoint}}, cache_dir=str(tmp_path / "hf"))
    assert sorted(d["segment_id"]) == sorted(Store(local).segments("train").column("segment_id").to_pylist())


# -- training ---------------------------------------------------------------------------------------
def test_loader_streams_row_groups_from_the_url_in_worker_processes(synthetic_url: str, synthetic: Path) -> None:
    from mmolre.data import StoreDataset, make_loader
    from mmolre.tasks import infer_tasks

    tasks = infer_tasks(Store(synthetic))
    remote = StoreDataset(synthetic_url, "train", ["text", "audio"], tasks)
    here = StoreDataset(synthetic, "train", ["text", "audio"], tasks)
    assert [(rg, n) for _, rg, n in remote.row_groups] == [(rg, n) for _, rg, n in here.row_groups]
    assert all(p.startswith(synthetic_url.removeprefix("s3://")) for p, _, _ in remote.row_groups)  # read in place
    ids = [sid for b in make_loader(remote, batch_size=16, num_workers=2) for sid in b["segment_id"]]
    assert sorted(ids) == sorted(r["segment_id"] for r in here)
    first_remote, first_local = next(iter(remote)), next(iter(here))
    assert (first_remote["x"]["audio"] == first_local["x"]["audio"]).all()


@pytest.mark.slow
def test_mmolre_train_from_the_url(synthetic_url: str, synthetic: Path, s3: S3, tmp_path: Path) -> None:  # noqa: F811
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"epochs": 1, "batch_size": 16, "progress": False, "arch": dict(TINY_ARCH)}))
    out = tmp_path / "run"
    proc = cli("train", "--store", synthetic_url, "--out", str(out), "--config", str(config), "--device", "cpu",
               env=s3.env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["store"] == {"path": synthetic_url, "manifest_sha256": sha256_file(synthetic / "manifest.json")}
    assert results["test"]["sentiment"]["n"] == 32
    no_secret(proc.stdout, proc.stderr, *(p.read_bytes() for p in out.rglob("*") if p.is_file()))
    evaluated = cli("evaluate", "--run", str(out), "--json", env=s3.env())
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout)["store"] == synthetic_url
    assert f"store {synthetic_url} (the run's training store)" in evaluated.stderr


@pytest.mark.slow
def test_cli_inspect_validate_and_errors_on_urls(url: str, s3: S3, local: Path) -> None:  # noqa: F811
    info = cli("inspect", url, "--json", env=s3.env())
    assert info.returncode == 0, info.stderr[-3000:]
    assert json.loads(info.stdout)["store"] == url
    assert json.loads(info.stdout)["segments"] == json.loads(cli("inspect", str(local), "--json", env=s3.env()).stdout)["segments"]
    checked = cli("validate", url, env=s3.env())
    assert (checked.returncode, checked.stdout.strip()) == (0, f"{url}: valid")
    wrong = "s3://no-such-bucket-mmolre/store"
    proc = cli("train", "--store", wrong, "--out", str(local.parent / "never-written"), env=s3.env())
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("mmolre: error: ")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr  # docs/contracts.md: 1 = error
    assert errors == [f"mmolre: error: {wrong}: not a feature store (no manifest.json; The specified bucket does not exist)"]
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    proc = cli("inspect", url, env={**s3.env(), "AWS_ENDPOINT_URL": closed, "AWS_ENDPOINT_URL_S3": closed})
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("mmolre: error: ")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith(f"mmolre: error: {url}: cannot reach the object store"), errors
    no_secret(info.stdout, info.stderr, checked.stdout, checked.stderr, proc.stdout, proc.stderr)


def test_exports_read_the_url_store(url: str, local: Path, tmp_path: Path) -> None:
    import h5py
    import numpy as np

    from pipelines.export.csd import write_csd
    from pipelines.export.mmsa import export_mmsa

    def datasets(path: Path) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        return {k: v for k, v in out.items() if "/data/" in k}  # metadata holds a fresh uuid per file

    a = datasets(write_csd(url, "audio_lld", tmp_path / "remote.csd"))
    b = datasets(write_csd(local, "audio_lld", tmp_path / "local.csd"))
    assert a.keys() == b.keys() and len(a) > 2 and all(np.array_equal(a[k], b[k]) for k in a)
    # the MMSA pickle: the same bytes from the URL as from the local copy
    assert export_mmsa(url, tmp_path / "remote.pkl").read_bytes() == export_mmsa(local, tmp_path / "local.pkl").read_bytes()


def test_permission_and_credential_errors_name_the_url_and_mask_secrets() -> None:
    """moto's server does not enforce permissions, so the client's own AccessDenied error is built and translated
    by s3fs exactly as a denied GET would be."""
    from botocore.exceptions import ClientError, NoCredentialsError
    from s3fs.errors import translate_boto_error

    from feature_schemas.remote import store_error

    denied = translate_boto_error(ClientError({"Error": {"Code": "AccessDenied", "Message": f"denied for {SECRET}"}},
                                              "GetObject"))
    assert isinstance(denied, PermissionError)
    os.environ["MMOLRE_TEST_SECRET_TOKEN"] = SECRET  # any secret-named variable's value is masked
    try:
        error = store_error("s3://user:pw@bucket/store", denied)
    finally:
        del os.environ["MMOLRE_TEST_SECRET_TOKEN"]
    assert isinstance(error, StoreError)
    assert str(error).startswith("s3://bucket/store: permission denied (check the credentials")
    assert SECRET not in str(error) and "pw@" not in str(error) and "***" in str(error)
    missing = store_error("s3://bucket/store", NoCredentialsError())
    assert missing is not None and "no credentials found" in str(missing)


@pytest.mark.slow
def test_training_from_the_url_equals_training_from_the_local_copy(synthetic_url: str, synthetic: Path, tmp_path: Path) -> None:
    from mmolre.config import TrainConfig
    from mmolre.train import train

    cfg = TrainConfig.from_dict({"epochs": 2, "batch_size": 16, "progress": False, "arch": dict(TINY_ARCH), "seed": 0,
                                 "device": "cpu", "deterministic": True})
    remote = train(synthetic_url, tmp_path / "remote", config=cfg)
    here = train(synthetic, tmp_path / "local", config=cfg)
    assert remote["store"]["path"] == synthetic_url and remote["store"]["manifest_sha256"] == here["store"]["manifest_sha256"]
    def learnt(history: list[dict]) -> list[dict]:  # what the model saw and learnt, without the wall-clock keys
        return [{k: v for k, v in e.items() if "seconds" not in k and "per_s" not in k} for e in history]

    assert learnt(remote["history"]) == learnt(here["history"]) and remote["test"] == here["test"]


@pytest.mark.slow
def test_url_reads_never_abort_the_process_at_exit(url: str, s3: S3) -> None:  # noqa: F811
    """pyarrow's scan threads release Python file objects just after a scan; a process that exits at that moment
    used to abort ("terminate called without an active exception", exit -6) in about one `mmolre inspect
    s3://...` in seven. 16 runs in a row all exit 0 with the full report."""
    for _ in range(16):
        r = cli("inspect", url, "--json", env=s3.env())
        assert r.returncode == 0, r.stderr[-2000:]
        assert json.loads(r.stdout)["store"] == url
