"""A build worker's start-up: models loaded ahead of the first unit (stages.media.warm_up, the Dask WarmUp plugin)
change no stored byte, and the plugin really loads them on real worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import media_fixtures as mf

ROOT = Path(__file__).resolve().parents[1]

_BUILD = """
import hashlib, json, sys
from pathlib import Path
from pipelines.recipes.videos import VideoConfig, build_videos
from pipelines.stages import media, warm_up
if sys.argv[3] == "warm":
    assert media.start_warm_up(VideoConfig())
    warm_up.await_warm_up()
    assert media.warm_up(VideoConfig())["text"] < 0.05  # everything cached: the second call loads nothing
build_videos(Path(sys.argv[1]), Path(sys.argv[2]), VideoConfig(), progress=False)
store = Path(sys.argv[2])
print(json.dumps({str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in sorted(store.rglob("*.parquet"))}))
"""


@pytest.mark.slow
def test_warmed_up_process_writes_the_same_bytes(tmp_path: Path) -> None:
    """The MOSI clip (forced alignment, openSMILE, mediapipe face, MiniLM) and a silent clip (alignment fails,
    Whisper fallback) built in a process that warmed up first and in one that did not: identical Parquet files."""
    mf.need(mf.MOSI_CLIP, mf.FACE_CLIP, mf.MOSI_LABELS)
    import csv

    with mf.MOSI_LABELS.open(newline="") as f:
        text = next(r["text"] for r in csv.DictReader(f) if r["id"] == mf.MOSI_ID)
    rows = [{"video_path": str(mf.MOSI_CLIP), "segment_id": mf.MOSI_ID, "transcript": text, "split": "train"},
            {"video_path": str(mf.FACE_CLIP), "segment_id": "face", "transcript": "nothing is said here", "split": "test"}]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    digests = {}
    for mode in ("cold", "warm"):
        r = subprocess.run([sys.executable, "-c", _BUILD, str(manifest), str(tmp_path / mode), mode], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        digests[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    assert digests["cold"] and digests["cold"] == digests["warm"]


def _loaded() -> dict[str, bool]:
    """Run on a worker: whether its warm-up finished and what it left loaded."""
    from pipelines.stages import warm_up

    warm_up.await_warm_up()
    return {"started": bool(warm_up._WARMING), "torch": "torch" in sys.modules,
            "transformers": "transformers" in sys.modules, "matplotlib": "matplotlib" in sys.modules}


@pytest.mark.slow
def test_warm_up_plugin_loads_models_on_each_worker() -> None:
    """On a real LocalCluster, the plugin that `mmolre build videos` registers starts each worker's warm-up; the
    workers load torch but neither transformers nor matplotlib (bert_light, the lean mediapipe import)."""
    from distributed import Client, LocalCluster

    from pipelines.dask_cluster import register_warm_up
    from pipelines.recipes.videos import VideoConfig

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        register_warm_up(client, VideoConfig())
        states = list(client.run(_loaded).values())
    assert states == [{"started": True, "torch": True, "transformers": False, "matplotlib": False}]


def test_warm_config_only_for_builds_with_media(tmp_path: Path) -> None:
    """Workers warm up for a media build; a text-only manifest (no media file) loads no models ahead."""
    mf.need(mf.MOSI_CLIP)
    from pipelines.dask_cluster import warm_config
    from pipelines.recipes.videos import VideoConfig, plan_videos

    text_only = tmp_path / "text.jsonl"
    text_only.write_text(json.dumps({"segment_id": "t", "transcript": "just words", "split": "train"}) + "\n")
    media = tmp_path / "media.jsonl"
    media.write_text(json.dumps({"video_path": str(mf.MOSI_CLIP), "segment_id": "m", "transcript": "so",
                                 "split": "train"}) + "\n")
    config = VideoConfig(fps=3.0)
    assert warm_config(plan_videos(media, config)) == config
    from dataclasses import replace

    from pipelines.stages.url_media import process_url_media_unit

    assert warm_config(replace(plan_videos(media, config), stage=process_url_media_unit)) == config  # media fetched from URLs
    assert warm_config(plan_videos(text_only, config)) is None
    assert warm_config(None) is None


_FORKED = """
import sys
from distributed import Client, LocalCluster
from pipelines.dask_cluster import local_dask_config, preload_forkserver

def modules():
    return {m: m in sys.modules for m in ("torch", "pipelines.stages.media", "transformers")}

if __name__ == "__main__":
    with local_dask_config():
        if not preload_forkserver():
            print("no-forkserver")
            sys.exit(0)
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \\
                Client(cluster) as client:
            print(list(client.run(modules).values()))
"""


def _last_line(tmp_path: Path, code: str) -> str:
    """Run `code` as a fresh process's main script (a forkserver this test process started earlier would not see
    a new preload); its last line of output. Skips where there is no forkserver start method."""
    script = tmp_path / "main.py"
    script.write_text(code)
    r = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    if r.stdout.strip() == "no-forkserver":
        pytest.skip("no forkserver start method here")
    return r.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_local_cluster_workers_fork_with_torch_already_imported(tmp_path: Path) -> None:
    """The command line's local cluster (forkserver workers) preloads torch and the media stage in the forkserver,
    so each worker starts with them imported (paid once, not per worker); no warm-up plugin involved here. In a
    fresh process: a forkserver this test process started earlier would not see the preload."""
    assert _last_line(tmp_path, _FORKED) == str([{"torch": True, "pipelines.stages.media": True,
                                                      "transformers": False}])


_EARLY = """
import json, os, sys
from multiprocessing import forkserver
from pipelines.dask_cluster import local_dask_config, start_forkserver_early

def facts():
    return {"parent": os.getppid(), "torch": "torch" in sys.modules}

if __name__ == "__main__":
    if not start_forkserver_early():
        print("no-forkserver")
        sys.exit(0)
    early = forkserver._forkserver._forkserver_pid
    from distributed import Client, LocalCluster  # planning would run here, beside the forkserver's imports
    with local_dask_config():
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \\
                Client(cluster) as client:
            seen = list(client.run(facts).values())
    print(json.dumps({"early": early, "parents": [f["parent"] for f in seen], "torch": [f["torch"] for f in seen]}))
"""


@pytest.mark.slow
def test_build_starts_the_workers_forkserver_before_planning(tmp_path: Path) -> None:
    """`mmolre build` with local workers starts their forkserver before it plans (start_forkserver_early): the
    cluster made afterwards forks every worker from that same process, which has the preload imported."""
    seen = json.loads(_last_line(tmp_path, _EARLY))
    assert seen["parents"] == [seen["early"], seen["early"]] and seen["torch"] == [True, True]
