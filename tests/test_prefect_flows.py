"""The deployments, run the way users run them: a real local Prefect server, `python -m flows.serve`, and
`prefect deployment run FLOW/default --watch`; then the store or run they made is checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from feature_schemas import Store, validate
from flows.local_prefect import prefect_server, run_deployment, served_deployments

from .csd_fixtures import write_mosei_fixture

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEPLOYMENTS = ["build-mosei-features/default", "build-mosi-features/default", "extract-video-features/default",
               "train-mmolre/default", "video-to-model/default"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect")
    with prefect_server(home) as env, served_deployments(env, home / "serve.log", DEPLOYMENTS):
        yield env


def test_build_mosei_features_deployment(served: dict[str, str], tmp_path: Path) -> None:
    csd = tmp_path / "csd"
    csd.mkdir()
    write_mosei_fixture(csd)
    store = tmp_path / "store"
    done = run_deployment(served, "build-mosei-features/default",
                          {"csd_dir": str(csd), "store": str(store), "mode": "mean", "n_workers": 2}, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Completed" in done.stdout
    assert validate(store).ok
    s = Store(store)
    assert s.segments().num_rows > 0 and set(s.aligned_sets()) >= {"covarep"}
    assert s.manifest.report["n_labelled_videos_in_no_fold"] == 1
    # a second run finds every shard written and writes nothing
    again = run_deployment(served, "build-mosei-features/default",
                           {"csd_dir": str(csd), "store": str(store), "mode": "mean", "n_workers": 2}, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:]
    assert Store(store).manifest.files == s.manifest.files
