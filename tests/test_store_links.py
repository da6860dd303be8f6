"""A symbolic link anywhere among a store's own files never makes a build, a resume, an --overwrite, `validate`
or folder pruning open, truncate, write, delete or prune anything outside the store: the store is refused with one
line naming the link, and the files the link points at are unchanged."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bench.csd_fixtures import write_mosei_fixture
from feature_schemas import StoreError, StoreLinkError, validate
from flows.cli import main
from pipelines.build import build_store
from pipelines.store_dirs import StoreLock
from pipelines.store_writer import BuildConfig
from tests import synthetic_recipe as syn


def build(path: Path, n: int = 4, **kw: object) -> object:
    return build_store(path, "synthetic", syn.make_units(n), syn.process, syn.FEATURE_SETS,
                       BuildConfig(units_per_shard=2), progress=False, **kw)  # type: ignore[arg-type]


def tree(root: Path) -> dict[str, str]:
    """Every file (sha256), link and folder under `root`, without following links."""
    out: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            rel = p.relative_to(root).as_posix()
            out[rel] = ("link:" + os.readlink(p)) if p.is_symlink() else "dir" if p.is_dir() else \
                hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def outside_folder(tmp_path: Path) -> Path:
    """A folder of the user's beside the store: a file, a store-looking file and an empty folder."""
    out = tmp_path / "elsewhere"
    (out / "empty" / "nested").mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    (out / "part-00000.json").write_text("{}")
    (out / "lock").write_text("precious")
    return out


def plant(store: Path, where: str, elsewhere: Path) -> Path:
    """A link at `store/where` to the outside folder (or to its file `lock`, for a lock)."""
    link = store / where
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_dir() and not link.is_symlink():
        for p in sorted(link.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        link.rmdir()
    elif link.exists():
        link.unlink()
    link.symlink_to(elsewhere / "lock" if where.endswith("lock") else elsewhere)
    return link


WHERE = ["_build", "_build/lock", "_build/shards", "segments", "failures", "aligned/train", "frames"]


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("overwrite", [False, True], ids=["resume", "overwrite"])
def test_a_link_inside_a_store_is_refused_and_nothing_outside_changes(tmp_path: Path, where: str, overwrite: bool) -> None:
    store = tmp_path / "s"
    build(store)
    elsewhere = outside_folder(tmp_path)
    link = plant(store, where, elsewhere)
    before, inside = tree(elsewhere), tree(store)
    for n in (4, 6):  # a resume, and a build with other inputs (it would write and delete)
        with pytest.raises(StoreLinkError) as err:
            build(store, n=n, overwrite=overwrite)
        assert f"'{where}' is a symbolic link (to " in str(err.value) and "\n" not in str(err.value)
    assert tree(elsewhere) == before and tree(store) == inside
    problems = [str(p) for p in validate(store).problems]
    assert any(f"'{where}': is a symbolic link" in p for p in problems), problems
    assert tree(elsewhere) == before and link.is_symlink()


def test_a_new_store_whose_build_state_is_a_link_is_refused(tmp_path: Path) -> None:
    """No store yet, only a planted `_build` link: the first build refuses it before creating anything there."""
    elsewhere = outside_folder(tmp_path)
    store = tmp_path / "s"
    store.mkdir()
    (store / "_build").symlink_to(elsewhere)
    before = tree(elsewhere)
    with pytest.raises(StoreLinkError, match="'_build' is a symbolic link"):
        build(store)
    assert tree(elsewhere) == before


def test_the_lock_is_never_opened_through_a_link_or_a_hard_link(tmp_path: Path) -> None:
    store = tmp_path / "s"
    elsewhere = outside_folder(tmp_path)
    (store / "_build").mkdir(parents=True)
    (store / "_build" / "lock").symlink_to(elsewhere / "lock")
    with pytest.raises(StoreLinkError, match="'_build/lock' is a symbolic link"):
        StoreLock(store).__enter__()
    (store / "_build" / "lock").unlink()
    os.link(elsewhere / "lock", store / "_build" / "lock")  # same file system: a second name for the user's file
    with pytest.raises(StoreError, match="hard links; refused"):
        StoreLock(store).__enter__()
    assert (elsewhere / "lock").read_text() == "precious"


def test_files_are_never_written_through_a_link(tmp_path: Path) -> None:
    from pipelines.local_files import write_atomic

    store = tmp_path / "s"
    (store / "segments").mkdir(parents=True)
    target = tmp_path / "victim.txt"
    target.write_text("precious")
    write_atomic(store, "segments/x.parquet", b"data")
    (store / "segments" / "y.parquet").symlink_to(target)
    with pytest.raises(StoreLinkError, match="'segments/y.parquet' is a symbolic link"):
        write_atomic(store, "segments/y.parquet", b"new")
    assert target.read_text() == "precious" and (store / "segments" / "x.parquet").read_bytes() == b"data"
    (store / "aligned").symlink_to(tmp_path)
    with pytest.raises(StoreLinkError, match="'aligned' is a symbolic link"):
        write_atomic(store, "aligned/train/z.parquet", b"data")
    assert not (tmp_path / "train").exists()


def test_cli_names_the_link_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csd = tmp_path / "csd"
    csd.mkdir()
    write_mosei_fixture(csd)
    store = tmp_path / "mosei"
    args = ["build", "mosei", "--csd-dir", str(csd), "--out", str(store), "--workers", "0", "--quiet"]
    assert main(args) == 0
    elsewhere = outside_folder(tmp_path)
    plant(store, "segments", elsewhere)
    before = tree(elsewhere)
    capsys.readouterr()
    assert main([*args, "--overwrite"]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("mmolre: error:")]
    assert err == [f"mmolre: error: {store}: 'segments' is a symbolic link (to '{elsewhere}'); refused: a store is "
                   "never written through a link (it could change files outside the store); replace the link with a "
                   "real folder or file, or choose another --out"]
    assert tree(elsewhere) == before


def test_a_build_walks_the_store_for_links_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The link scan walks every table folder: a build (new, or a rerun over a whole store) does it once, before
    anything changes; later writes check their own paths (`no_links`)."""
    import pipelines.store_dirs as store_dirs

    walks: list[Path] = []
    real = store_dirs.store_links
    monkeypatch.setattr(store_dirs, "store_links", lambda root: walks.append(Path(root)) or real(root))
    store = tmp_path / "s"
    build(store)
    assert walks == [store]
    build(store, n=6)  # extends the store: reads its manifest, writes, deletes nothing
    assert walks == [store, store]
