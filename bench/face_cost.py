"""CPU cost per analysed frame of every face backend that can run here, on the real clips in ../shared/data.

    .venv/bin/python bench/face_cost.py [--fps 5] [--backends dlib mediapipe] [--repeats 3]

Per backend and clip: the whole `extract` (decode + face analysis) and, separately, decoding the same frames
the same way (`sample_frames` with the backend's size and colour), each timed as CPU time (process_time, best
of `--repeats`) so a busy machine skews it less. `ms_per_frame` is the face analysis alone (extract minus
decode) per analysed frame; `decode_ms_per_frame` the decoding; `x_realtime_one_core` seconds of video per
second of CPU for both; `expression_mean` per clip: the mean expression probabilities over
frames with a face (backends that have them). torch runs on one thread, as in a build's workers. Backends that cannot run here
(py-feat without local weights, OpenFace without CSVs for these clips) are listed with the reason. The last
line is one JSON object: {"backends": {NAME: {...}, ...}, "skipped": {NAME: reason}}, NAME as --face spells it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pipelines.errors import PipelineError
from pipelines.extract.face import get_backend
from pipelines.extract.face.frames import sample_frames
from pipelines.extract.registry import names

DATA = Path(os.environ.get("MMOLRE_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
FILES = ["mosi/raw/Oz06ZWiO20M_6.mp4", "faces/single_face.mp4", "faces/no_face.mp4", "faces/face_noface.mov",
         "faces/WolfgangLanger_Pexels.mp4", "cremad/1001_DFA_ANG_XX.flv", "cremad/1001_DFA_DIS_XX.flv",
         "cremad/1001_DFA_FEA_XX.flv", "cremad/1001_DFA_NEU_XX.flv"]
BACKENDS = tuple(names("face"))


def _decode_settings(backend: Any) -> dict[str, Any]:
    """How the backend samples frames (size, colour), so decoding can be timed on its own."""
    cfg = backend.config
    height = getattr(cfg, "detect_height", getattr(cfg, "max_height", 360))
    return {"max_height": height, "colour": backend.name in ("mediapipe", "pyfeat")}


def _best(fn: Any, repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
    return best, out


def measure(name: str, files: list[Path], fps: float, repeats: int) -> dict[str, Any]:
    backend = get_backend(name, fps=fps)
    settings = _decode_settings(backend)
    dims = backend.feature_set().dims
    backend.extract_video(files[0])  # load models, warm caches
    total = decode = seconds = 0.0
    frames = with_face = 0
    per_clip = {}
    for f in files:
        t_all, ff = _best(lambda f=f: backend.extract_video(f), repeats)
        t_dec, sf = _best(lambda f=f: sample_frames(f, None, None, fps, **settings), repeats)
        n = sum(im is not None for im in sf.images)
        total, decode, frames = total + t_all, decode + t_dec, frames + n
        with_face += int(ff.valid.sum())
        seconds += float(ff.end[-1] - ff.start[0]) if len(ff.start) else 0.0
        per_clip[f.name] = {"frames": n, "with_face": int(ff.valid.sum()),
                            "ms_per_frame": round(max(t_all - t_dec, 0.0) / max(n, 1) * 1000, 2)}
        expr = [i for i, d in enumerate(dims) if d.startswith(("fer_", "emo_"))]
        if expr and ff.valid.any():  # clip-mean expression probabilities over the frames with a face
            per_clip[f.name]["expression_mean"] = {
                dims[i].split("_", 1)[1]: round(float(ff.values[ff.valid, i].mean()), 3) for i in expr}
        print(f"{name:10s} {f.name:28s} {n:4d} frames  face {ff.valid.mean():.2f}  "
              f"face {max(t_all - t_dec, 0.0) / max(n, 1) * 1000:6.1f} ms/frame  decode {t_dec / max(n, 1) * 1000:5.1f}"
              f" ms/frame  {float(ff.end[-1]) / t_all:5.1f}x real time (one core)", flush=True)
    return {
        "ms_per_frame": round((total - decode) / frames * 1000, 2),
        "decode_ms_per_frame": round(decode / frames * 1000, 2),
        "frames": frames,
        "frames_with_face": with_face,
        "x_realtime_one_core": round(seconds / total, 2),
        "fps": fps,
        "clips": per_clip,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fps", type=float, default=5.0, help="frames analysed per second of video (same for all)")
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    files = [DATA / f for f in FILES if (DATA / f).is_file()]
    if not files:
        print(f"no clips under {DATA}", file=sys.stderr)
        return 1
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in args.backends:
        if name == "openface":
            skipped[name] = "imports OpenFace CSVs; none exist for these clips (OpenFace itself is not installable here)"
            continue
        try:
            results[name] = measure(name, files, args.fps, args.repeats)
        except PipelineError as e:
            skipped[name] = str(e).splitlines()[0]
    if "dlib" in results:
        for r in results.values():
            r["speedup_vs_dlib"] = round(results["dlib"]["ms_per_frame"] / r["ms_per_frame"], 2)
    print(json.dumps({"backends": results, "skipped": skipped}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
