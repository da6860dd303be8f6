"""A training run's folder (`train --out`), as careful as a store's: one training at a time (an fcntl lock the
kernel drops when the holder dies), never inside a feature store, and never into a non-empty folder that is not a
run of the same configuration unless `--overwrite` (which removes only the files a run writes). Resuming a run of
the same configuration stays as it is."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from feature_schemas.pid_lock import LockBusy, LockRefused, take_pid_lock

from .errors import RunError

LOCK_FILE = ".train.lock"
RUN_FILE = "run.json"  # what the run was started with: the model and the configuration as asked (not resolved)
RUN_FILES = ("last.pt", "best.pt", "config.json", "results.json", "report.md", RUN_FILE, "predictions_*.csv",
             "loss_curves.png", "sentiment_pred_vs_true.png", "emotion_f1.png", ".*.tmp-*")
RUN_FOLDERS = ("tokenizer",)
RUN_MARKS = (RUN_FILE, "config.json", "last.pt", "best.pt")  # any of these: the folder is a run
# settings a later invocation of the same run may change: more epochs, another device, a time slice
PER_INVOCATION = ("epochs", "device", "num_workers", "progress", "resume", "stop_after_epochs", "max_steps", "amp")


def _identity(model: str, config: dict[str, Any]) -> dict[str, Any]:
    found = {"model": model, "config": {k: v for k, v in sorted(config.items()) if k not in PER_INVOCATION}}
    return json.loads(json.dumps(found, default=str))  # as read back from run.json


def _store_around(out: Path) -> Path | None:
    """The feature store `out` is (or lies inside), if any: a folder with a manifest and a store's folders."""
    for folder in (out, *out.parents):
        if (folder / "manifest.json").is_file() and any((folder / d).is_dir() for d in ("segments", "aligned", "_build")):
            return folder
    return None


def _differs(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    a, b = found.get("config", {}), wanted["config"]
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return (["model"] if found.get("model") != wanted["model"] else []) + keys


def _remove_run_files(out: Path) -> None:
    """What `--overwrite` removes: the files and folders a run writes, nothing else of the folder's."""
    for entry in os.scandir(out):
        if entry.name == LOCK_FILE:
            continue
        if entry.is_file(follow_symlinks=False) and any(fnmatch.fnmatch(entry.name, p) for p in RUN_FILES):
            os.unlink(entry.path)
        elif entry.name in RUN_FOLDERS and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)


def refuse_store(out: Path, store: object) -> None:
    """A run folder is never a store, inside one, or inside the store it trains on."""
    if (around := _store_around(out.resolve())) is not None:
        raise RunError(f"{out}: is {'a feature store' if around == out.resolve() else f'inside the feature store {around}'}; "
                       "a training run never writes into a store; choose another --out")
    if isinstance(store, (str, os.PathLike)) and "://" not in str(store):
        base = Path(store).resolve()
        if out.resolve() == base or base in out.resolve().parents:
            raise RunError(f"{out}: is inside the training store {store}; choose another --out")


def check_run_dir(out: Path, model: str, config: dict[str, Any], overwrite: bool = False) -> None:
    """Refuse, changing nothing, a non-empty folder that is not a run of this model and configuration (unless
    `overwrite`); with `overwrite`, remove the other run's files."""
    if not out.is_dir():
        if out.exists() or out.is_symlink():
            raise RunError(f"{out}: exists and is not a folder; choose another --out")
        return
    names = sorted(n for n in os.listdir(out) if n != LOCK_FILE)
    if not names:
        return
    wanted = _identity(model, config)
    if not any(n in names for n in RUN_MARKS):
        if overwrite:
            return  # asked for: the run's files go beside the user's
        shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
        raise RunError(f"{out}: is not empty and not a training run (found {shown}); use --overwrite to write the "
                       "run into it anyway (your files stay), or choose another --out")
    try:
        found = json.loads((out / RUN_FILE).read_text()) if RUN_FILE in names else None
    except (OSError, ValueError):
        found = {}
    if found is None or (isinstance(found, dict) and not _differs(found, wanted)):
        return  # the same run (or one started before run.json existed): resume as before
    if not overwrite:
        what = ", ".join(_differs(found, wanted)[:6]) if isinstance(found, dict) else "unreadable run.json"
        raise RunError(f"{out}: holds a training run of another model or configuration (differs in {what}); use "
                       "--overwrite to replace it (only a run's files are removed), or choose another --out")
    _remove_run_files(out)


@contextlib.contextmanager
def claim_run_dir(out: Path, model: str, config: dict[str, Any], store: object = None, overwrite: bool = False,
                  lock: bool = True) -> Iterator[None]:
    """Hold the run folder for the length of a training (a second one is refused at once, naming the holder),
    check it under the lock (`refuse_store`, `check_run_dir`) and record what the run was started with; the lock
    file is removed when the run ends or is refused."""
    if not lock:  # another rank of a distributed run: its main rank holds and checks the folder
        yield
        return
    refuse_store(out, store)
    created = not os.path.lexists(out)
    out.mkdir(parents=True, exist_ok=True)
    recorded = False
    path = out / LOCK_FILE
    fd: int | None = None
    try:
        try:
            fd = take_pid_lock(path)
        except LockRefused as e:
            raise RunError(f"{path}: is {e.what}; refused (the lock is truncated when taken); remove it") from None
        except LockBusy as e:
            raise RunError(f"{out}: another training is writing this run folder (pid {e.holder}); wait for it to "
                           "finish, or choose another --out") from None
        try:
            check_run_dir(out, model, config, overwrite)
        except RunError:
            os.unlink(path)
            raise
        if not os.path.lexists(out / RUN_FILE):
            record = os.open(out / RUN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(record, "w") as f:
                f.write(json.dumps(_identity(model, config), indent=1, sort_keys=True) + "\n")
            recorded = True
        try:
            yield
        except BaseException:
            if recorded and not any(os.path.lexists(out / m) for m in RUN_MARKS if m != RUN_FILE):
                with contextlib.suppress(OSError):  # a run that wrote nothing leaves no claim on the folder
                    os.unlink(out / RUN_FILE)
            raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
    finally:
        if fd is not None:
            os.close(fd)  # also drops the lock
        if created:
            with contextlib.suppress(OSError):  # only when empty: a folder this run made and left nothing in
                os.rmdir(out)
