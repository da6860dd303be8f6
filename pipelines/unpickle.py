"""Restricted unpickling: pickles found on the internet execute code when loaded with `pickle.load`.

`load_restricted` admits only what numpy arrays, numpy scalars and plain containers need, refuses any other
global with `MmsaPickleError` naming the file and the refused global, and caps what the admitted callables
may allocate. `pipelines.recipes.mmsa` reads MMSA's pickles through it.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MmsaPickleError

# Memory: what the admitted callables may allocate in all is bounded by the file's size. An honest pickle needs
# about twice its size (the raw bytes, then the arrays made from them); the rest is headroom for small files.
BUDGET_FACTOR = 4
BUDGET_EXTRA = 64 * 2**20


def _numpy_multiarray() -> Any:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


class _CheckedArray(np.ndarray):
    """What `numpy.ndarray` resolves to while unpickling: `__setstate__` checks the state against the declared
    shape and the memory budget before numpy sees it (numpy 2.4 crashes on an object array whose list is
    shorter than its shape). Replaced by plain ndarrays once loaded."""

    _unpickler: RestrictedUnpickler | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # a pickle calling ndarray(shape) directly
        raise MmsaPickleError("calls numpy.ndarray() directly (numpy pickles never do)", "read")

    def __setstate__(self, state: Any) -> None:
        u = type(self)._unpickler
        if u is None:  # pragma: no cover - only reachable when unpickled outside read_mmsa
            raise MmsaPickleError("numpy array state outside read_mmsa", "read")
        super().__setstate__(u.check_array_state(state))


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickles numpy arrays, numpy scalars and plain containers; every other global is refused, and what the
    admitted ones may allocate is capped (`budget` bytes in all).

    Built on Python's own unpickler, not the C one: the C unpickler zero-fills its memo list up to any PUT
    index, so a 9-byte pickle (`LONG_BINPUT 1.3e9`) makes it touch ~20 GB. For MMSA's few large arrays the
    speed is the same."""

    def __init__(self, file: Any, source: str, budget: int | None = None) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source
        self.budget = BUDGET_EXTRA if budget is None else budget
        self.used = 0
        self._array_cls = type("_CheckedArray", (_CheckedArray,), {"_unpickler": self})
        self._allowed = self._allowed_globals()

    # refusals name the file
    def error(self, what: str) -> MmsaPickleError:
        return MmsaPickleError(f"{self.source}: {what}", "read", source_path=self.source)

    def charge(self, nbytes: int, what: str) -> None:
        """Count an allocation before it happens; refuse one that would pass the budget."""
        self.used += max(0, int(nbytes))
        if self.used > self.budget:
            raise self.error(f"refused: {what} would make unpickling allocate over {self.budget // 2**20} MiB, far more "
                             "than the file's size (a pickle bomb, or not an MMSA dataset)")

    def _count(self, n: Any, what: str) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise self.error(f"refused: {what} with size {n!r}")
        return n

    # the admitted callables
    def _sized(self, kind: type, per_item: int) -> Any:
        def make(*args: Any) -> Any:
            if len(args) > 1 or (args and isinstance(args[0], (int, float))):
                raise self.error(f"refused: {kind.__name__}{args!r:.60} (only copies of loaded values are admitted)")
            if args:
                src = args[0]
                n = len(src) if hasattr(src, "__len__") else None
                if n is None:
                    raise self.error(f"refused: {kind.__name__}() of a {type(src).__name__}")
                self.charge(per_item * n, f"{kind.__name__}() of {n} items")
            return kind(*args)
        return make

    def _bytearray(self, *args: Any) -> bytearray:
        if not args:
            return bytearray()
        src = args[0]
        if isinstance(src, str):
            if len(args) != 2 or str(args[1]).lower().replace("-", "") != "latin1":
                raise self.error("refused: bytearray() of text in an encoding other than latin-1")
            self.charge(len(src), "bytearray()")
            return bytearray(src, "latin-1")
        if isinstance(src, (bytes, bytearray)) and len(args) == 1:
            self.charge(len(src), "bytearray()")
            return bytearray(src)
        raise self.error(f"refused: bytearray({type(src).__name__}) (only copies of loaded bytes are admitted)")

    def _encode(self, obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        import _codecs

        if not isinstance(obj, str) or encoding.lower().replace("-", "") != "latin1":
            raise self.error(f"refused: _codecs.encode of {type(obj).__name__} to {encoding!r} (numpy pickles use latin1 text)")
        self.charge(len(obj), "_codecs.encode")
        return _codecs.encode(obj, "latin1", errors)

    def _reconstruct(self, cls: Any, shape: Any, dtype: Any) -> Any:
        if cls is not self._array_cls:
            raise self.error(f"refused: numpy _reconstruct of {getattr(cls, '__name__', cls)!r}")
        n = 1
        for d in tuple(shape) if isinstance(shape, (tuple, list)) else (shape,):
            n *= self._count(d, "numpy array")
        self.charge(n, "a numpy array")
        return _numpy_multiarray()._reconstruct(cls, shape, dtype)

    def _scalar(self, dtype: Any, *args: Any) -> Any:
        dtype = _real_dtype(dtype)
        if not isinstance(dtype, np.dtype):
            raise self.error(f"refused: numpy scalar of {type(dtype).__name__}")
        if dtype.hasobject and dtype != np.dtype(object):
            raise self.error(f"refused: numpy scalar of {dtype} (objects inside a structured type)")
        if dtype != np.dtype(object) and not (len(args) == 1 and isinstance(args[0], bytes) and len(args[0]) == dtype.itemsize):
            raise self.error(f"refused: numpy {dtype} scalar whose data is not {dtype.itemsize} bytes")
        self.charge(dtype.itemsize, "a numpy scalar")
        return _numpy_multiarray().scalar(dtype, *args)

    def _dtype(self, spec: Any, align: Any = False, copy: Any = True) -> _DtypeProxy:
        self.charge(64, "a numpy dtype")
        if not isinstance(spec, str) or not all(isinstance(f, bool) for f in (align, copy)):
            raise self.error(f"refused: numpy dtype {spec!r:.40}")
        try:
            dtype = np.dtype(spec)
        except (TypeError, ValueError, SyntaxError) as e:
            raise self.error(f"refused: numpy dtype {spec!r:.40} ({e})") from None
        if dtype.kind not in _DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise self.error(f"refused: numpy dtype {dtype} (only numbers, text and objects)")
        return _DtypeProxy(self, dtype)

    def check_array_state(self, state: Any) -> tuple:
        """An ndarray's pickled state: (version, shape, dtype, fortran, data) with data exactly the shape's;
        returns it with the real dtype."""
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise self.error("refused: a numpy array with a malformed state")
        state = state[:-3] + (_real_dtype(state[-3]),) + state[-2:]
        shape, dtype, data = state[-4], state[-3], state[-1]
        if not isinstance(dtype, np.dtype) or not isinstance(shape, tuple):
            raise self.error("refused: a numpy array with a malformed state")
        n = 1
        for d in shape:
            n *= self._count(d, "numpy array shape")
        if dtype.hasobject:
            if dtype != np.dtype(object):
                raise self.error(f"refused: a numpy array of {dtype} (objects inside a structured type)")
            if not isinstance(data, list) or len(data) != n:
                raise self.error(f"refused: an object array of shape {shape} whose data holds "
                                 f"{len(data) if isinstance(data, list) else type(data).__name__} items")
        elif not isinstance(data, (bytes, bytearray)) or len(data) != n * dtype.itemsize:
            raise self.error(f"refused: a {dtype} array of shape {shape} whose data is not {n * dtype.itemsize} bytes")
        self.charge(n * dtype.itemsize, f"a numpy array of shape {shape}")
        return state

    def _allowed_globals(self) -> dict[tuple[str, str], Any]:
        allowed: dict[tuple[str, str], Any] = {}
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed[(mod, "_reconstruct")] = self._reconstruct
            allowed[(mod, "scalar")] = self._scalar  # a numpy scalar from its dtype and bytes
        allowed[("numpy", "ndarray")] = self._array_cls
        allowed[("numpy", "dtype")] = self._dtype
        # Plain containers (older protocols name them as globals) and the bytes helper of protocol-2 numpy pickles.
        for name, obj in (("list", self._sized(list, 8)), ("tuple", self._sized(tuple, 8)), ("dict", self._sized(dict, 64)),
                          ("set", self._sized(set, 64)), ("frozenset", self._sized(frozenset, 64)),
                          ("bytearray", self._bytearray), ("complex", complex)):
            allowed[("builtins", name)] = obj
            allowed[("__builtin__", name)] = obj
        allowed[("_codecs", "encode")] = self._encode
        return allowed

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get((module, name))
        if obj is None:
            raise MmsaPickleError(
                f"{self.source}: refused to load global {module}.{name} (only numpy arrays and plain containers are "
                "allowed; a pickle naming other globals can run code)", "read", source_path=self.source)
        return obj


_DTYPE_KINDS = "biufcUSO"  # bool, integers, floats, complex, text, bytes, objects: all MMSA and our exports use


class _DtypeProxy:
    """What `numpy.dtype(...)` gives while unpickling: numpy 2.4 crashes on a dtype `__setstate__` whose flags do
    not fit the type (e.g. object flags on datetime64), so the state must equal the dtype's own, byte order aside."""

    def __init__(self, unpickler: RestrictedUnpickler, dtype: np.dtype) -> None:
        self.unpickler, self.dtype = unpickler, dtype

    def __setstate__(self, state: Any) -> None:
        own = self.dtype.__reduce__()[2]
        if not (isinstance(state, tuple) and len(state) == len(own) and state[0] == own[0] and state[2:] == own[2:]
                and state[1] in ("<", ">", "|", "=")):
            raise self.unpickler.error(f"refused: numpy dtype {self.dtype} with a state that does not fit it")
        if state[1] != own[1] and own[1] != "|":
            self.dtype = self.dtype.newbyteorder(state[1])


def _real_dtype(x: Any) -> Any:
    return x.dtype if isinstance(x, _DtypeProxy) else x


class _SizedReader:
    """The file as the unpickler reads it: a read of more bytes than remain (a length field claiming gigabytes in
    a small file) is refused before anything is allocated for it."""

    def __init__(self, f: Any, size: int, source: str) -> None:
        self._f, self.size, self.pos, self.source = f, size, 0, source

    def _check(self, n: int) -> None:
        if n > self.size - self.pos:
            raise MmsaPickleError(f"{self.source}: declares {n} bytes at offset {self.pos} but only {self.size - self.pos} "
                                  "remain (truncated, or crafted)", "read", source_path=self.source)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        self._check(n)
        data = self._f.read(n)
        self.pos += len(data)
        return data

    def readinto(self, buf: Any) -> int:
        with memoryview(buf) as view:
            self._check(view.nbytes)
            k = self._f.readinto(view)
        self.pos += k
        return k

    def readline(self) -> bytes:
        line = self._f.readline()
        self.pos += len(line)
        return line


def _plain(obj: Any, depth: int = 0) -> Any:
    """The loaded structure with the unpickler's checked arrays turned back into plain ndarrays."""
    if depth > 64:
        raise ValueError("nested more than 64 levels deep")
    if isinstance(obj, _DtypeProxy):
        return obj.dtype
    if isinstance(obj, _CheckedArray):
        arr = obj.view(np.ndarray)
        if arr.dtype == object:
            flat = arr.reshape(-1)
            for i, v in enumerate(flat):
                if isinstance(v, (np.ndarray, dict, list, tuple)):
                    flat[i] = _plain(v, depth + 1)
        return arr
    if isinstance(obj, dict):
        return {k: _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v, depth + 1) for v in obj)
    return obj


def load_restricted(path: str | os.PathLike, budget: int | None = None) -> Any:
    """Unpickle a file through `RestrictedUnpickler` with a memory budget of BUDGET_FACTOR x its size (+ 64 MiB)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            limit = budget if budget is not None else BUDGET_FACTOR * size + BUDGET_EXTRA
            return _plain(RestrictedUnpickler(_SizedReader(f, size, str(p)), str(p), limit).load())
    except MmsaPickleError:
        raise
    except FileNotFoundError:
        raise MmsaPickleError(f"{p}: no such file", "read", source_path=str(p)) from None
    except IsADirectoryError:
        raise MmsaPickleError(f"{p}: is a folder, not a pickle file", "read", source_path=str(p)) from None
    except MemoryError:
        raise MmsaPickleError(f"{p}: refused: declares an item larger than memory allows (truncated, or crafted)", "read",
                              source_path=str(p)) from None
    except RecursionError:
        raise MmsaPickleError(f"{p}: refused: nested too deeply", "read", source_path=str(p)) from None
    except Exception as e:  # noqa: BLE001 - whatever a damaged pickle raises, it is not a readable pickle
        raise MmsaPickleError(f"{p}: not a readable pickle ({type(e).__name__}: {e})", "read", source_path=str(p)) from None
