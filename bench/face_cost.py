"""CPU cost per analysed frame of every face backend that can run here, on the real clips in ../shared/data.

    .venv/bin/python bench/face_cost.py [--fps 5] [--backends dlib mediapipe mediapipe-faceapi] [--repeats 3]

Per backend and clip: the whole `extract` (decode + face analysis) and, separately, decoding the same frames
the same way (`sample_frames` with the backend's size and colour), each timed as CPU time (process_time, best
of `--repeats`) so a busy machine skews it less. `ms_per_frame` is the face analysis alone (extract minus
decode) per analysed frame; `decode_ms_per_frame` the decoding; `x_realtime_one_core` seconds of video per
second of CPU for both; `expression_mean` per clip: the mean expression probabilities over
frames with a face (backends that have them), and for CREMA-D's clips `relative_mean`: the clip mean of the
speaker-relative probabilities, the baseline being the median over all frames with a face of that actor's clips
(the actor is the file name's first field). `mediapipe-faceapi` is the mediapipe backend with face-api's
expression network instead of the default FER one. torch runs on one thread, as in a build's workers. Backends
that cannot run here (py-feat without local weights, OpenFace without CSVs for these clips) are listed with the
reason. Then one markdown table per backend with expressions (clip means, every clip), and the last line is one
JSON object: {"backends": {NAME: {...}, ...}, "skipped": {NAME: reason}}, NAME as --face spells it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import PipelineError
from pipelines.extract.face import get_backend, relative
from pipelines.extract.face.frames import sample_frames
from pipelines.extract.registry import names
from pipelines.records import FrameFeatures

DATA = Path(os.environ.get("MMOLRE_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
FILES = ["mosi/raw/Oz06ZWiO20M_6.mp4", "faces/single_face.mp4", "faces/no_face.mp4", "faces/face_noface.mov",
         "faces/WolfgangLanger_Pexels.mp4", "cremad/1001_DFA_ANG_XX.flv", "cremad/1001_DFA_DIS_XX.flv",
         "cremad/1001_DFA_FEA_XX.flv", "cremad/1001_DFA_NEU_XX.flv"]
BACKENDS = tuple(names("face"))
EXPRESSION_PREFIXES = ("expr_", "emo_")


def _speaker_relative(clips: dict[str, FrameFeatures], dims: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """CREMA-D clips (ACTOR_SENTENCE_EMOTION_LEVEL): each clip's mean of expression minus its actor's median."""
    expr = [i for i, d in enumerate(dims) if d.startswith(EXPRESSION_PREFIXES)]
    if not expr:
        return {}
    actors: dict[str, list[str]] = {}
    for name in clips:
        if name.endswith(".flv"):
            actors.setdefault(name.split("_")[0], []).append(name)
    out = {}
    for group in actors.values():
        rel_cols = list(range(len(dims), len(dims) + len(expr)))
        widened = [FrameFeatures(clips[n].start, clips[n].end,
                                 np.concatenate([clips[n].values, np.zeros((len(clips[n].start), len(expr)))], 1),
                                 clips[n].valid) for n in group]
        for n, f in zip(group, relative.with_relative(widened, expr, rel_cols), strict=True):
            if f.valid.any():
                out[n] = {dims[i].split("_", 1)[1]: round(float(f.values[f.valid, c].mean()), 3)
                          for i, c in zip(expr, rel_cols, strict=True)}
    return out


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
    per_clip: dict[str, dict[str, Any]] = {}
    extracted: dict[str, FrameFeatures] = {}
    for f in files:
        t_all, ff = _best(lambda f=f: backend.extract_video(f), repeats)
        t_dec, sf = _best(lambda f=f: sample_frames(f, None, None, fps, **settings), repeats)
        n = sum(im is not None for im in sf.images)
        total, decode, frames = total + t_all, decode + t_dec, frames + n
        with_face += int(ff.valid.sum())
        extracted[f.name] = ff
        seconds += float(ff.end[-1] - ff.start[0]) if len(ff.start) else 0.0
        per_clip[f.name] = {"frames": n, "with_face": int(ff.valid.sum()),
                            "ms_per_frame": round(max(t_all - t_dec, 0.0) / max(n, 1) * 1000, 2)}
        expr = [i for i, d in enumerate(dims) if d.startswith(EXPRESSION_PREFIXES)]
        if expr and ff.valid.any():  # clip-mean expression probabilities over the frames with a face
            per_clip[f.name]["expression_mean"] = {
                dims[i].split("_", 1)[1]: round(float(ff.values[ff.valid, i].mean()), 3) for i in expr}
        print(f"{name:10s} {f.name:28s} {n:4d} frames  face {ff.valid.mean():.2f}  "
              f"face {max(t_all - t_dec, 0.0) / max(n, 1) * 1000:6.1f} ms/frame  decode {t_dec / max(n, 1) * 1000:5.1f}"
              f" ms/frame  {float(ff.end[-1]) / t_all:5.1f}x real time (one core)", flush=True)
    for clip, rel in _speaker_relative(extracted, dims).items():
        per_clip[clip]["relative_mean"] = rel
    return {
        "ms_per_frame": round((total - decode) / frames * 1000, 2),
        "decode_ms_per_frame": round(decode / frames * 1000, 2),
        "frames": frames,
        "frames_with_face": with_face,
        "x_realtime_one_core": round(seconds / total, 2),
        "fps": fps,
        "clips": per_clip,
    }


def _print_expression_table(name: str, clips: dict[str, dict[str, Any]]) -> None:
    """Markdown: per clip, the mean expression probabilities (and CREMA-D's speaker-relative ones)."""
    for key, title in (("expression_mean", "clip-mean expression probabilities"),
                       ("relative_mean", "clip mean of the speaker-relative probabilities (CREMA-D)")):
        rows = {c: v[key] for c, v in clips.items() if key in v}
        if not rows:
            continue
        labels = list(next(iter(rows.values())))
        print(f"\n{name}: {title}\n\n| clip | " + " | ".join(labels) + " | top |")
        print("| --- " * (len(labels) + 2) + "|")
        for clip, probs in rows.items():
            top = max(probs, key=probs.__getitem__)
            print(f"| `{clip}` | " + " | ".join(f"{probs[k]:+.3f}" if key == "relative_mean" else f"{probs[k]:.3f}"
                                               for k in labels) + f" | {top} |")
    print(flush=True)


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
    for name, r in results.items():
        _print_expression_table(name, r["clips"])
    print(json.dumps({"backends": results, "skipped": skipped}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
