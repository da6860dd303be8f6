"""A real S3 API on 127.0.0.1 for the object-storage tests: moto's server, started and stopped by the tests.

`s3` (module scope) yields an `S3` with the endpoint and a fresh bucket; the standard AWS variables point at it
for the duration (s3fs, boto3 and pyarrow read them), so code under test finds the endpoint the way a user's
would: from the environment, never from a store or an argument.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-never-in-a-store",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@dataclass(frozen=True)
class S3:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    port: int

    def url(self, *parts: str) -> str:
        return "s3://" + "/".join([self.bucket, *parts])

    def env(self) -> dict[str, str]:
        """The variables a subprocess (a Dask worker, a Prefect worker) needs to reach this endpoint."""
        return {**ENV, "AWS_ENDPOINT_URL": self.endpoint, "AWS_ENDPOINT_URL_S3": self.endpoint}

    def filesystem(self):  # noqa: ANN201 - s3fs is an optional dependency
        import s3fs

        return s3fs.S3FileSystem(client_kwargs={"endpoint_url": self.endpoint}, skip_instance_cache=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    pytest.importorskip("s3fs", reason="object storage needs s3fs (make install installs the s3 extra)")
    server_mod = pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (make install)")
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    store = S3(endpoint, f"mmolre-{uuid.uuid4().hex[:8]}", port)
    saved = {k: os.environ.get(k) for k in store.env()}
    os.environ.update(store.env())
    try:
        store.filesystem().mkdir(store.bucket)
        yield store
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
