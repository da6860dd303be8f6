"""A real local Prefect server (SQLite, 127.0.0.1) and a process serving our deployments, for tests and the demo."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the repository root: flows.serve runs from here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not answers(url):
        if proc.poll() is not None:
            raise RuntimeError(f"Prefect server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer from {url} after {timeout:.0f} s: {log.read_text()[-2000:]}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen, grace: float) -> None:
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()


def answers(url: str) -> bool:
    """The URL answers 200 (a server's health check, a deployment that exists)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def healthy(api_url: str) -> bool:
    return answers(f"{api_url}/health")


@contextmanager
def prefect_server(home: Path, port: int | None = None) -> Iterator[dict[str, str]]:
    """Start `prefect server start` on a loopback port (a free one by default); yields the environment that
    points at it. If a server already answers on `port`, it is used and left running."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "HF_HUB_OFFLINE": "1",
    }
    if healthy(env["PREFECT_API_URL"]):
        yield env
        return
    log = home / "server.log"
    prefect = str(Path(sys.executable).with_name("prefect"))
    with open(log, "w") as out:
        proc = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{port}/api/health", 120, proc, log)
        yield env
    finally:
        _stop(proc, 20)


@contextmanager
def served_deployments(env: dict[str, str], log: Path, names: list[str]) -> Iterator[subprocess.Popen]:
    """Run `python -m flows.serve` until each `flow/deployment` in `names` is registered."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        api = env["PREFECT_API_URL"]
        while missing := [n for n in names if not answers(f"{api}/deployments/name/{n}")]:
            if proc.poll() is not None:
                raise RuntimeError(f"flows.serve exited ({proc.returncode}): {log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"deployments {missing} not served: {log.read_text()[-3000:]}")
            time.sleep(1)
        yield proc
    finally:
        _stop(proc, 30)


def run_deployment(env: dict[str, str], name: str, params: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """`prefect deployment run NAME --params JSON --watch`: exit 0 only if the run Completed."""
    prefect = str(Path(sys.executable).with_name("prefect"))
    return subprocess.run([prefect, "deployment", "run", name, "--params", json.dumps(params), "--watch"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
