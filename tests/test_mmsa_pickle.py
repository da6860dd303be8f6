"""MMSA pickles: hostile pickles are refused, export -> import keeps values, MMSA's own layout imports."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.csd_fixtures import TEST_C, TRAIN_A, write_mosei_fixture
from feature_schemas import Store, validate
from pipelines.errors import MmsaPickleError
from pipelines.export.mmsa import export_mmsa
from pipelines.recipes.mmsa import import_mmsa, read_mmsa
from pipelines.recipes.sdk import build_sdk


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("csd")
    write_mosei_fixture(folder)
    out = tmp_path_factory.mktemp("store") / "mosei"
    build_sdk(folder, out, "mosei", keep_frames=True, progress=False)
    return out


def test_code_running_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "aligned_50.pkl"
    with open(evil, "wb") as f:
        pickle.dump({"train": {"id": [_RunsShell(marker)]}}, f)
    with pytest.raises(MmsaPickleError, match=r"refused to load global (posix|os|nt)\.system") as e:
        read_mmsa(evil)
    assert str(evil) in str(e.value) and e.value.source_path == str(evil)
    assert not marker.exists()

    sneaky = tmp_path / "eval.pkl"  # a hand-written protocol-0 pickle calling builtins.eval
    sneaky.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(MmsaPickleError, match=r"builtins\.eval"):
        read_mmsa(sneaky)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(MmsaPickleError, match="garbage.pkl"):
        read_mmsa(garbage)


def test_export_then_import_keeps_values(store: Path, tmp_path: Path) -> None:
    pkl = export_mmsa(store, tmp_path / "aligned_50.pkl")
    data = read_mmsa(pkl)
    assert set(data) == {"train", "valid", "test"} and len(data["valid"]["id"]) == 0  # MMSA's loader reads all three
    train = data["train"]
    L = max(len(w) for s in data.values() for w in s["words"])  # the longest segment: nothing is cut
    assert train["text"].shape == (3, L, 300) and train["audio"].shape == (3, L, 74) and train["vision"].shape == (3, L, 35)
    assert train["regression_labels"].dtype == np.float32 and len(train["raw_text"]) == 3

    result = import_mmsa(pkl, tmp_path / "back", progress=False)
    assert result.n_failures == 0 and result.n_segments == 5
    assert validate(tmp_path / "back").ok
    a, b = Store(store), Store(tmp_path / "back")
    assert set(b.feature_sets) == {"covarep", "facet42", "glove"}
    assert b.feature_sets["covarep"].dims == a.feature_sets["covarep"].dims
    for sid in (f"{TRAIN_A}[0]", f"{TRAIN_A}[1]", f"{TEST_C}[0]"):
        x, y = a.segment(sid), b.segment(sid)
        assert x["words"] == y["words"] and x["split"] == y["split"] and x["video_id"] == y["video_id"]
        assert x["sentiment"] == pytest.approx(y["sentiment"]) and x["fear"] == pytest.approx(y["fear"])
        np.testing.assert_array_equal(x["word_start"], y["word_start"])
        for name in ("covarep", "facet42", "glove"):
            np.testing.assert_array_equal(x[name], y[name])
            np.testing.assert_array_equal(x[f"{name}__coverage"], y[f"{name}__coverage"])


def test_unaligned_export_uses_frames(store: Path, tmp_path: Path) -> None:
    pkl = export_mmsa(store, tmp_path / "unaligned_50.pkl", layout="unaligned", frame_len=400)
    test = read_mmsa(pkl)["test"]
    frames = Store(store).frames("covarep", "test").to_pylist()
    n = {r["segment_id"]: len(r["frame_start"]) for r in frames}
    ids = list(test["id"])
    assert test["audio"].shape == (2, 400, 74)
    assert test["audio_lengths"] == [min(n[i], 400) for i in ids]
    assert np.isfinite(test["audio"]).all()  # MMSA expects no -inf; the store keeps them in frames
    result = import_mmsa(pkl, tmp_path / "back", progress=False)
    assert result.n_failures == 0 and validate(tmp_path / "back").ok


def test_mmsa_own_layout_imports(tmp_path: Path) -> None:
    """A pickle shaped like MMSA's (protocol 2, ids `video$_$clip`, no extra keys) imports with untimed words."""
    rng = np.random.default_rng(0)
    text = np.zeros((2, 50, 768), np.float32)
    text[0, :3] = rng.normal(size=(3, 768))
    text[1, :2] = rng.normal(size=(2, 768))
    audio = np.zeros((2, 50, 5), np.float32)
    audio[0, :3] = 1.0
    split = {
        "id": np.array(["abc$_$1", "abc$_$2"], dtype=object),
        "raw_text": np.array(["it was good", "so bad"], dtype=object),
        "text": text, "audio": audio, "vision": np.zeros((2, 50, 20), np.float32),
        "regression_labels": np.array([1.4, -2.0], np.float32),
        "audio_lengths": [3, 2], "vision_lengths": [3, 2],
    }
    pkl = tmp_path / "aligned_50.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"train": split, "valid": dict(split, id=np.array(["v$_$1", "v$_$2"], dtype=object)),
                     "test": dict(split, id=np.array(["t$_$1", "t$_$2"], dtype=object))}, f, protocol=2)
    result = import_mmsa(pkl, tmp_path / "store", names={"text": "bert"}, progress=False)
    assert result.n_failures == 0 and validate(tmp_path / "store").ok
    st = Store(tmp_path / "store")
    assert set(st.feature_sets) == {"bert", "mmsa_audio", "mmsa_vision"}
    seg = st.segment("abc$_$1")
    assert seg["words"] == ["it", "was", "good"] and seg["video_id"] == "abc" and seg["split"] == "train"
    np.testing.assert_array_equal(seg["bert"], text[0, :3])
    np.testing.assert_array_equal(seg["mmsa_audio"], np.ones((3, 5), np.float32))
    assert seg["sentiment"] == pytest.approx(1.4)


# -- hostile ids and pickle bombs; the build command and flow ---------------------------------------------
REPO = Path(__file__).resolve().parents[1]
BOMB = b"\x80\x02c__builtin__\ntuple\nc__builtin__\nbytearray\nJ\x00\xe1\xf5\x05\x85R\x85R."  # tuple(bytearray(10**8))


def _mmsa_split(ids: list[str], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n = len(ids)
    text = np.zeros((n, 50, 8), np.float32)
    text[:, :2] = rng.normal(size=(n, 2, 8))
    return {"id": np.array(ids, dtype=object), "raw_text": np.array(["so good"] * n, dtype=object), "text": text,
            "audio": np.where(text[..., :3] != 0, 1.0, 0.0).astype(np.float32), "vision": np.zeros((n, 50, 4), np.float32),
            "regression_labels": np.linspace(-2, 2, n).astype(np.float32)}


def _write_pickle(path: Path, splits: dict) -> Path:
    with open(path, "wb") as f:
        pickle.dump(splits, f, protocol=2)
    return path


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_bad_ids_become_failure_rows_and_never_paths(tmp_path: Path) -> None:
    bad = ["a/b", "a\x00b", "../evil", "\x1b[31mred", " pad", "a..b", "ok$_$1", "ok$_$1"]
    pkl = _write_pickle(tmp_path / "aligned_50.pkl", {"train": _mmsa_split(["good$_$1", *bad]),
                                                      "test": _mmsa_split(["t$_$1"])})
    result = import_mmsa(pkl, tmp_path / "store", progress=False)
    assert result.n_segments == 2 and result.n_failures == len(bad)
    st = Store(tmp_path / "store")
    assert sorted(st.segments().column("segment_id").to_pylist()) == ["good$_$1", "t$_$1"]
    failures = st.failures().to_pylist()
    reasons = " | ".join(f["reason"] for f in failures)
    assert "path separator" in reasons and "control characters" in reasons and "'..'" in reasons
    assert "white space" in reasons and "appears 2 times" in reasons
    assert {f["item_id"] for f in failures} == {f"train[{i}]" for i in range(1, 9)}
    assert st.manifest.report["ids_rejected"] == {"train": len(bad)}
    assert validate(tmp_path / "store").ok


def test_pickle_bomb_is_refused_quickly_with_bounded_memory(tmp_path: Path) -> None:
    """The 54-byte tuple(bytearray(10**8)) costs ~1 GB through a plain unpickler; here it is refused before it
    allocates. Memory is measured in a fresh process (growth of its peak resident size)."""

    assert len(BOMB) == 54
    bombs = {"bomb.pkl": BOMB,
             "big.pkl": b"\x80\x02c__builtin__\nbytearray\n\x8a\x05\x00\x00\x00\x80\x00\x85R.",  # bytearray(2**31)
             "frame.pkl": b"\x80\x04\x95" + (2**62).to_bytes(8, "little") + b".",
             "memo.pkl": b"\x80\x02Nr\x00\x00\x00\x50.",  # PUT at 1.3e9: the C unpickler zero-fills ~20 GB of memo
             "short_object_array.pkl": pickle.dumps(np.array(["a", "b"], dtype=object), protocol=2)
             .replace(b"K\x02\x85", b"J\x00\xe1\xf5\x05\x85")}  # shape 10**8, 2 items: crashes numpy unchecked
    for name, data in bombs.items():
        (tmp_path / name).write_bytes(data)
    script = (  # VmHWM: the peak resident size of this process image (ru_maxrss may carry the parent's over)
        "import sys\n"
        "from pipelines.errors import MmsaPickleError\nfrom pipelines.recipes.mmsa import read_mmsa\n"
        "def peak():\n"
        "    return [int(ln.split()[1]) for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0]\n"
        "before = peak()\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        read_mmsa(path)\n"
        "        print('LOADED', path)\n"
        "    except MmsaPickleError as e:\n"
        "        print('REFUSED', str(e).replace(chr(10), ' '))\n"
        "print('GROWTH_MB', (peak() - before) // 1024)\n")
    proc = subprocess.run([sys.executable, "-c", script, *(str(tmp_path / n) for n in bombs)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    refused = [ln for ln in lines if ln.startswith("REFUSED")]
    assert len(refused) == len(bombs), proc.stdout
    assert all(str(tmp_path) in ln for ln in refused)
    assert "bytearray(int)" in refused[0] and "declares" in refused[2] and "not MMSA's layout" in refused[3]
    assert "holds 2 items" in refused[4]
    growth = int(lines[-1].split()[1])
    assert growth < 50, proc.stdout


def test_amplification_through_memo_is_capped(tmp_path: Path) -> None:
    """One 1 MiB bytes object referenced 200 times to make 200 arrays: refused once the arrays pass the
    budget (4 x the file size + 64 MiB, here a small budget given directly)."""
    from pipelines.unpickle import load_restricted

    one = pickle.dumps([np.zeros(2**17)] * 1, protocol=4)
    assert load_restricted(_write_bytes(tmp_path / "one.pkl", one), budget=4 * 2**20)[0].shape == (2**17,)
    many = pickle.dumps([np.zeros(2**17) for _ in range(8)], protocol=4)
    with pytest.raises(MmsaPickleError, match=r"many.pkl: refused: .*allocate over 4 MiB"):
        load_restricted(_write_bytes(tmp_path / "many.pkl", many), budget=4 * 2**20)


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_build_mmsa_command_end_to_end(tmp_path: Path) -> None:
    pkl = _write_pickle(tmp_path / "aligned_50.pkl", {"train": _mmsa_split(["v1$_$1", "v1$_$2", "a/b"]),
                                                      "valid": _mmsa_split(["v2$_$1"]), "test": _mmsa_split(["v3$_$1"])})
    out = tmp_path / "store"
    done = _cli("build", "mmsa", "--input", str(pkl), "--out", str(out), "--workers", "0", "--quiet", "--text-name", "bert")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "segments: train 2, valid 1, test 1" in done.stdout and "failures: 1" in done.stdout
    assert "train[2] [read]" in done.stdout and "path separator" in done.stdout
    st = Store(out)
    assert set(st.feature_sets) == {"bert", "mmsa_audio", "mmsa_vision"} and validate(out).ok
    strict = _cli("build", "mmsa", "--input", str(pkl), "--out", str(out), "--workers", "0", "--quiet", "--text-name", "bert",
                  "--strict")
    assert strict.returncode == 3 and "0 written, 1 already written" in strict.stdout

    (tmp_path / "bomb.pkl").write_bytes(BOMB)
    refused = _cli("build", "mmsa", "--input", str(tmp_path / "bomb.pkl"), "--out", str(tmp_path / "s2"), "--workers", "0")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert refused.stderr.startswith(f"mmolre: error: {tmp_path / 'bomb.pkl'}: refused")


def test_build_mmsa_flow_and_its_registration(tmp_path: Path) -> None:
    import yaml

    from flows.build_features import build_mmsa_features

    pkl = _write_pickle(tmp_path / "unaligned_50.pkl", {"train": _mmsa_split(["v1$_$1", "v1$_$2"]),
                                                        "test": _mmsa_split(["v3$_$1"])})
    summary = build_mmsa_features.fn(str(pkl), str(tmp_path / "store"), aligned=True, n_workers=0)
    segments = summary["counts"]["segments"]
    assert segments["train"] == 2 and segments["test"] == 1 and summary["counts"]["failures"] == 0
    assert validate(tmp_path / "store").ok

    entry = "flows/build_features.py:build_mmsa_features"
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    assert entry in [d["entrypoint"] for d in deployments]
    from flows.serve import all_flows

    assert "build-mmsa-features" in [f.name for f in all_flows()]


MUTANTS = """
import pickle, random, sys
import numpy as np
from pipelines.errors import MmsaPickleError
from pipelines.unpickle import load_restricted
seed, proto, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = random.Random(seed)
base = pickle.dumps({"train": {"id": np.array(["a$_$1", "b$_$2"], dtype=object),
                               "text": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
                               "regression_labels": np.array([1.0, 2.0], np.float32), "s": np.float64(3.0),
                               "l": [1, (2, 3)], "c": 1j}}, protocol=proto)
other = []
for it in range(1500):
    b = bytearray(base)
    for _ in range(rng.randint(1, 4)):
        k = rng.randrange(len(b))
        op = rng.random()
        if op < 0.5:
            b[k] = rng.randrange(256)
        elif op < 0.75:
            del b[k:k + rng.randint(1, 8)]
        else:
            b[k:k] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    open(path, "wb").write(b)
    try:
        load_restricted(path)
    except MmsaPickleError:
        pass
    except Exception as e:
        other.append(f"{it}: {type(e).__name__}: {e}")
print("OTHER", len(other), other[:3])
print("PEAK_MB", [int(ln.split()[1]) // 1024 for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0])
"""


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "proto"), [(1, 2), (1, 4), (2, 2)])
def test_mutated_pickles_never_crash(seed: int, proto: int, tmp_path: Path) -> None:
    """1,500 random byte mutations of a small numpy pickle: each loads or is refused with MmsaPickleError; the
    process never dies. These seeds crashed (SIGSEGV) numpy 2.4 through an unchecked dtype `__setstate__`."""
    proc = subprocess.run([sys.executable, "-c", MUTANTS, str(seed), str(proto), str(tmp_path / "m.pkl")], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "OTHER 0 []" in proc.stdout, proc.stdout
    assert int(proc.stdout.split("PEAK_MB")[1]) < 400, proc.stdout  # a mutant once grew the memo to gigabytes
