"""Small feature stores for the model tests: synthetic ones written straight with pyarrow by the contract
(mmolre.synthetic), and one written by the real store writer (pipelines.store_writer) from the store tests'
recipe, so the loader is also tested on what the pipelines actually produce (empty segments, uncovered words)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mmolre.synthetic import SyntheticSpec, write_synthetic_store

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY_ARCH = {"d_model": 16, "n_heads": 2, "expert_ranks": [2, 4, 8], "task_rank": 4, "dropout": 0.0}


def synthetic_store(root: Path, labels: str = "mosei", **spec: object) -> Path:
    """A valid store with a learnable signal; `spec` overrides SyntheticSpec fields (sizes, dims, words...)."""
    return write_synthetic_store(root, SyntheticSpec(labels=labels, **spec))  # type: ignore[arg-type]


def writer_store(root: Path, n_videos: int = 9) -> Path:
    """A store built by pipelines.build.build_store (frames collapsed to words, failures table, manifest)."""
    from pipelines.build import build_store
    from pipelines.store_writer import BuildConfig
    from tests import synthetic_recipe as recipe

    build_store(root, "writer-fixture", recipe.make_units(n_videos), recipe.process, recipe.FEATURE_SETS,
                BuildConfig(units_per_shard=2), progress=False)
    return root


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run the module's torch work on one thread. On a small shared machine, torch's second thread often waits a
    whole scheduler slice for a busy core, making tiny ops 10x slower; one thread is also deterministic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ctrl_c_reaches_it() -> None:
    """Popen's preexec_fn for a child a test interrupts: SIGINT back to its default, as a terminal's Ctrl-C finds
    it. A suite started in the background by a non-interactive shell (`make test &`) ignores SIGINT, every child
    inherits that, and Python then installs no KeyboardInterrupt handler: the build would run to the end."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
