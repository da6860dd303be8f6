"""Credentials written into a URL are refused without ever being printed, logged or stored, whatever the secret
holds: AWS secret keys often contain `/`, `+` and `=`, which ended the URL's user part early and leaked the key.
Every URL-taking option and a manifest's media paths; real CLI runs, nothing reaches a network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from feature_schemas.storage import display, scrub
from tests.test_cli_errors import _mmsa_pickle

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCY=EXAMPLE/zq9Ww8xs"
URL = f"s3://AKIDEXAMPLE:{SECRET}@bucket/prefix"
PIECES = ("AKIDEXAMPLE", *SECRET.split("/"))  # no part of the key may show, not even the part before a `/`


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=300)


def leaks(text: str) -> list[str]:
    return [p for p in PIECES if p in text]


@pytest.mark.parametrize("where", ["store", "inspect", "validate", "csd-dir", "out"])
def test_a_secret_in_a_url_option_is_refused_and_never_shown(where: str, tmp_path: Path) -> None:
    args = {"store": ["train", "--store", URL, "--out", str(tmp_path / "run")],
            "inspect": ["inspect", URL],
            "validate": ["validate", URL],
            "csd-dir": ["build", "mosei", "--csd-dir", URL, "--out", str(tmp_path / "s"), "--workers", "0"],
            "out": ["build", "mmsa", "--input", str(_mmsa_pickle(tmp_path / "a.pkl", ["v$_$1"])), "--out", URL,
                    "--workers", "0"]}[where]
    done = run(*args)
    assert done.returncode in (1, 3), (done.returncode, done.stderr[-2000:])
    assert not leaks(done.stdout + done.stderr), done.stdout + done.stderr
    assert "s3://bucket/prefix" in done.stdout + done.stderr and "credentials in a URL are refused" in done.stdout + done.stderr


def test_a_secret_in_a_manifest_media_path_fails_that_row_and_is_stored_nowhere(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"video_path,segment_id,transcript,split\n{URL}/clip.mp4,s1,hello there,train\n"
                        ",t1,a text row,test\n")
    out = tmp_path / "store"
    done = run("build", "videos", "--input", str(manifest), "--out", str(out), "--face", "none", "--workers", "0",
               "--quiet")
    assert done.returncode in (0, 3, 4), done.stderr[-2000:]
    assert not leaks(done.stdout + done.stderr)
    shown = run("inspect", str(out))
    assert "has credentials in its URL; refused" in shown.stdout and not leaks(shown.stdout + shown.stderr)
    for path in out.rglob("*"):
        if path.is_file():
            assert not leaks(path.read_bytes().decode("latin-1")), path


def test_display_and_scrub_remove_secrets_with_slashes_plus_and_equals() -> None:
    assert display(URL) == "s3://bucket/prefix" and display("s3://u:p@ss@bucket/x") == "s3://bucket/x"
    assert display("s3://bucket/dir/a@b.txt") == "s3://bucket/dir/a@b.txt"  # a plain key with an @ stays
    assert not leaks(scrub(f"failed on {URL}/x and on AKIDEXAMPLE:{SECRET}@bucket"))
