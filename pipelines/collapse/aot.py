"""The collapse kernels compiled ahead of time (numba.pycc) into an extension module beside this file.

A process that collapses through numba's JIT first imports numba and loads its cached machine code: ~0.5 s of
CPU in every build worker, before its first segment. `make install` compiles the same functions once
(`python -m pipelines.collapse.aot`, ~10 s) into `_kernels_aot*.so`, which loads in under a millisecond
without numba. The extension is used only when it was built from the kernels' current source (a stamp holds
its sha256) and only for arguments of exactly the types it was compiled for; anything else, or no extension
(a read-only install, a machine without a C compiler), runs the kernels through numba as before. Both run the
same source with the same float64 operations in the same order and no fast-math beyond a boolean finiteness
test, so they give equal results (tests/test_collapse.py compares them).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import sys
import warnings
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MODULE = "_kernels_aot"
STAMP = f"{MODULE}.json"
# kernel -> its signature, {v} the frame values' type: float32 (stored features) or float64
SIGNATURES = {
    "check_rows": "void({v}[:, ::1], i8[:], i1[:])",
    "collapse_words": "void({v}[:, ::1], i8[:], f8[:], f8[:], i8[:], i8[:], f8[:], f8[:], b1[:], f8[:], i8, f8, "
                      "f8[:, ::1], i4[:], i1[:])",
}
COVERED = "f8[:](f8[:], f8[:], f8[:], f8[:])"
VALUE_TYPES = {np.dtype(np.float32): "f4", np.dtype(np.float64): "f8"}
log = logging.getLogger(__name__)


def source_id() -> str:
    """What the extension is compiled from: the kernels' and their codes' source and the signatures."""
    h = hashlib.sha256()
    for name in ("kernels.py", "codes.py"):
        h.update((HERE / name).read_bytes())
    h.update(json.dumps([SIGNATURES, COVERED]).encode())
    return h.hexdigest()


def build(output_dir: Path = HERE) -> Path:
    """Compile the extension (and its stamp) into `output_dir`; returns the extension's path."""
    from . import kernels

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba.pycc's pending-deprecation notice, on import and compile
        from numba.pycc import CC

        cc = CC(MODULE)
        cc.output_dir = str(output_dir)
        cc.verbose = False
        for tag in VALUE_TYPES.values():
            for name, signature in SIGNATURES.items():
                cc.export(f"{name}_{tag}", signature.format(v=tag))(getattr(kernels, name).py_func)
        cc.export("covered_lengths", COVERED)(kernels.covered_lengths.py_func)
        cc.compile()
    (Path(output_dir) / STAMP).write_text(json.dumps({"source": source_id()}) + "\n")
    return _extension_file(Path(output_dir))


def _extension_file(directory: Path) -> Path:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return directory / f"{MODULE}{suffix}"


def load(directory: Path = HERE) -> ModuleType | None:
    """The compiled extension in `directory`, or None when absent or built from other kernel source."""
    path, stamp = _extension_file(directory), directory / STAMP
    if not path.is_file() or not stamp.is_file():
        return None
    try:
        if json.loads(stamp.read_text()).get("source") != source_id():
            log.info("%s was built from older collapse kernels; using numba's JIT (make install rebuilds it)", path)
            return None
        spec = importlib.util.spec_from_file_location(f"{__package__}.{MODULE}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except (OSError, ImportError, ValueError, AssertionError) as e:
        log.info("cannot load %s (%s); using numba's JIT", path, e)
        return None


def _vector(a: Any, dtype: type, writeable: bool = False) -> bool:
    return isinstance(a, np.ndarray) and a.ndim == 1 and a.dtype == dtype and (a.flags.writeable or not writeable)


def _matrix(a: Any, dtype: Any, writeable: bool = False) -> bool:
    return (isinstance(a, np.ndarray) and a.ndim == 2 and a.dtype == dtype and a.flags.c_contiguous
            and (a.flags.writeable or not writeable))


class Kernels:
    """The kernels' three entry points: the extension's where the arguments are exactly its types (it does not
    check them itself), numba's JIT otherwise."""

    def __init__(self, extension: ModuleType | None) -> None:
        self.extension = extension

    def _jit(self) -> Any:
        from . import kernels  # numba and LLVM load here, on first need

        return kernels

    def _compiled(self, name: str, values: Any) -> Any:
        tag = VALUE_TYPES.get(getattr(values, "dtype", None)) if self.extension is not None else None
        return getattr(self.extension, f"{name}_{tag}") if tag is not None and _matrix(values, values.dtype) else None

    def check_rows(self, values: np.ndarray, rows: np.ndarray, state: np.ndarray) -> None:
        fn = self._compiled("check_rows", values)
        if fn is not None and _vector(rows, np.int64) and _vector(state, np.int8, writeable=True):
            return fn(values, rows, state)
        return self._jit().check_rows(values, rows, state)

    def collapse_words(self, values: np.ndarray, rows: np.ndarray, s0: np.ndarray, s1: np.ndarray, lo: np.ndarray,
                       hi: np.ndarray, ws: np.ndarray, we: np.ndarray, short: np.ndarray, mid: np.ndarray, mode: int,
                       eps: float, out: np.ndarray, n_frames: np.ndarray, state: np.ndarray) -> None:
        fn = self._compiled("collapse_words", values)
        if (fn is not None and _vector(rows, np.int64) and all(_vector(a, np.float64) for a in (s0, s1, ws, we, mid))
                and _vector(lo, np.int64) and _vector(hi, np.int64) and _vector(short, np.bool_)
                and isinstance(mode, int) and isinstance(eps, float) and _matrix(out, np.float64, writeable=True)
                and _vector(n_frames, np.int32, writeable=True) and _vector(state, np.int8, writeable=True)):
            return fn(values, rows, s0, s1, lo, hi, ws, we, short, mid, mode, eps, out, n_frames, state)
        return self._jit().collapse_words(values, rows, s0, s1, lo, hi, ws, we, short, mid, mode, eps, out,
                                          n_frames, state)

    def covered_lengths(self, s0: np.ndarray, cummax_end: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.extension is not None and all(_vector(x, np.float64) for x in (s0, cummax_end, a, b)):
            return self.extension.covered_lengths(s0, cummax_end, a, b)
        return self._jit().covered_lengths(s0, cummax_end, a, b)


@lru_cache(maxsize=1)
def kernels() -> Kernels:
    """This process's kernels (the extension is looked for once)."""
    return Kernels(load())


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    print(f"compiled {build(out)}")
