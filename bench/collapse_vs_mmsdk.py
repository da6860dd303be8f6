"""Word-level collapse: our vectorised `collapse(mode="mean")` against CMU-MultimodalSDK's `mmdataset.align`.

Usage: .venv/bin/python bench/collapse_vs_mmsdk.py [--scale small|full] [--sdk-videos N]

Both sides get the same MOSEI-shaped synthetic input (bench/_mosei_shaped.py: 100 Hz 74-d audio, 30 Hz 35-d
face, ~2.5 words/s) and collapse both streams onto the words. Each side runs in its own subprocess, so its
peak memory (ru_maxrss) is its own; the input held in memory is part of both peaks and is also reported
alone. The SDK side is `align("words", [mean])` with a mean that tolerates the text of the words sequence
(align collapses the reference sequence too); the data is finite, so NaN handling plays no part. Every word
is compared: where the SDK emits a vector, ours must agree within 1e-5; where it emits none (words shorter
than its epsilon, words no frame overlaps), ours must flag it (a zero-length word, or coverage 0).
With --sdk-videos N the SDK (and, for a like-for-like speedup, ours) runs on the first N videos only; ours
then also runs on all videos for its full-scale time. Ours is timed as the median of 5 passes, the SDK once;
our first pass, which also loads the compiled kernels (and compiles them on a machine that has never run
them, a few seconds), is reported on its own as `ours_first_pass_s`.
The last line printed is one JSON object (times in seconds, memory in MB, speedup = SDK time / our median
time on the same videos).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._mosei_shaped import SCALES, Video, make_video  # noqa: E402
from pipelines.collapse import EPSILON, CollapseConfig, collapse  # noqa: E402

STREAMS = ("audio", "face")
TOLERANCE = 1e-5
OURS_REPEATS = 5  # ours is timed as the median of 5 passes; the SDK, at minutes a pass, once


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _videos(n: int, seconds: float) -> list[Video]:
    return [make_video(i, seconds) for i in range(n)]


# ---- the two sides, each run in a subprocess -----------------------------------------------------------------


def _run_ours(videos: list[Video]) -> tuple[list[float], dict[str, np.ndarray]]:
    """Times OURS_REPEATS passes (a pass is short, so one burst of load on a shared machine would swamp it)."""
    config = CollapseConfig(mode="mean")
    times = []
    for _ in range(OURS_REPEATS):
        out: dict[str, list[np.ndarray]] = {f"{s}_{k}": [] for s in STREAMS for k in ("values", "present")}
        t0 = time.perf_counter()
        for v in videos:
            for s in STREAMS:
                stream = getattr(v, s)
                got = collapse(stream.values, stream.start, stream.end, v.word_start, v.word_end, config)
                out[f"{s}_values"].append(got.values)
                out[f"{s}_present"].append(got.n_frames > 0)
        times.append(time.perf_counter() - t0)
    return times, {k: np.concatenate(x) for k, x in out.items()}


def _sdk_mean(intervals: np.ndarray, features: np.ndarray) -> np.ndarray:
    try:
        return np.mean(features, axis=0, dtype=np.float64)
    except TypeError:  # the words sequence holds text: keep the word
        return features[0]


def _run_sdk(videos: list[Video]) -> tuple[list[float], dict[str, np.ndarray]]:
    from mmsdk import mmdatasdk
    from mmsdk.mmdatasdk.configurations.metadataconfigs import featuresetMetadataTemplate

    with contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: SIM115 - the SDK logs every step
        dataset = mmdatasdk.mmdataset({name: name for name in ("words", *STREAMS)})  # blank, in memory
        data = {
            "words": {v.video_id: {"intervals": np.stack([v.word_start, v.word_end], 1),
                                   "features": np.array(v.words, dtype="S")[:, None]} for v in videos},
            **{s: {v.video_id: {"intervals": np.stack([getattr(v, s).start, getattr(v, s).end], 1),
                                "features": getattr(v, s).values} for v in videos} for s in STREAMS},
        }
        for name, entries in data.items():
            dataset[name].setData(entries, name)
            dataset[name].setMetadata({k: name if k == "root name" else "bench" for k in featuresetMetadataTemplate}, name)
        del data
        t0 = time.perf_counter()
        dataset.align("words", collapse_functions=[_sdk_mean])
        seconds = time.perf_counter() - t0
    out: dict[str, np.ndarray] = {}
    for s in STREAMS:
        aligned = dataset[s].data
        dims = getattr(videos[0], s).values.shape[1]
        values, present = [], []
        for v in videos:
            block = np.zeros((len(v.word_start), dims))
            hit = np.zeros(len(v.word_start), bool)
            for i in range(len(v.word_start)):
                entry = aligned.get(f"{v.video_id}[{i}]")
                if entry is not None:
                    block[i], hit[i] = np.asarray(entry["features"])[0], True
            values.append(block)
            present.append(hit)
        out[f"{s}_values"], out[f"{s}_present"] = np.concatenate(values), np.concatenate(present)
    return [seconds], out


def _worker(side: str, videos: int, seconds: float, result: Path) -> None:
    if side == "sdk":
        import mmsdk.mmdatasdk  # noqa: F401 - loaded before the input is measured, as ours is
    data = _videos(videos, seconds)
    input_mb = _peak_mb()
    times, out = (_run_ours if side == "ours" else _run_sdk)(data)
    stats = {"side": side, "videos": videos, "seconds": float(np.median(times)), "all_seconds": times,
             "peak_mb": _peak_mb(), "input_peak_mb": input_mb,
             "words": int(sum(len(v.word_start) for v in data)),
             "frames": int(sum(len(getattr(v, s).start) for v in data for s in STREAMS))}
    np.savez(result, **out, short=np.concatenate([np.abs(v.word_end - v.word_start) < EPSILON for v in data]))
    result.with_suffix(".json").write_text(json.dumps(stats))


def _spawn(side: str, videos: int, seconds: float, workdir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    result = workdir / f"{side}_{videos}.npz"
    log = workdir / f"{side}_{videos}.log"
    cmd = [sys.executable, __file__, "--worker", side, "--videos", str(videos), "--seconds", str(seconds),
           "--result", str(result)]
    with open(log, "w") as err:
        code = subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
    if code != 0:
        sys.exit(f"{side} worker failed ({code}):\n" + log.read_text()[-3000:])
    with np.load(result) as arrays:
        return json.loads(result.with_suffix(".json").read_text()), dict(arrays)


# ---- comparison and report -----------------------------------------------------------------------------------


def _compare(ours: dict[str, np.ndarray], sdk: dict[str, np.ndarray]) -> dict[str, float | int]:
    worst, compared, skipped, unexplained = 0.0, 0, 0, 0
    short = sdk["short"]
    for s in STREAMS:
        hit = sdk[f"{s}_present"]
        both = hit & ours[f"{s}_present"]
        unexplained += int((hit & ~ours[f"{s}_present"]).sum())  # SDK has frames where we found none
        unexplained += int((~hit & ours[f"{s}_present"] & ~short).sum())  # we found frames the SDK did not
        skipped += int((~hit).sum())
        compared += int(both.sum())
        if both.any():
            worst = max(worst, float(np.abs(ours[f"{s}_values"][both].astype(np.float64) - sdk[f"{s}_values"][both]).max()))
    return {"max_abs_diff": worst, "compared_word_vectors": compared, "sdk_missing_word_vectors": skipped,
            "presence_mismatches": unexplained}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--sdk-videos", type=int, default=None, help="run the SDK on the first N videos only")
    parser.add_argument("--worker", choices=["ours", "sdk"], help=argparse.SUPPRESS)
    parser.add_argument("--videos", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.videos, args.seconds, args.result)
        return

    scale = SCALES[args.scale]
    videos, seconds = scale["videos"], scale["seconds"]
    subset = min(args.sdk_videos or videos, videos)
    with tempfile.TemporaryDirectory(prefix="collapse_bench_") as tmp:
        work = Path(tmp)
        ours_stats, ours_out = _spawn("ours", subset, seconds, work)
        sdk_stats, sdk_out = _spawn("sdk", subset, seconds, work)
        full_stats = _spawn("ours", videos, seconds, work)[0] if subset < videos else ours_stats
    agreement = _compare(ours_out, sdk_out)

    words = ours_stats["words"]
    speedup = sdk_stats["seconds"] / ours_stats["seconds"]
    print(f"collapse vs mmsdk.align, scale={args.scale}: {subset} of {videos} videos x {seconds:.0f} s, "
          f"{words} words, {ours_stats['frames']} frames (audio 100 Hz x 74, face 30 Hz x 35)")
    if subset < videos:
        print(f"  SDK run on the first {subset} videos only; speedup compares both sides on that same subset")
    for name, st in (("ours (collapse mean)", ours_stats), ("mmsdk align + mean", sdk_stats)):
        runs = st["all_seconds"]
        spread = f" (median of {len(runs)}: {min(runs):.3f}-{max(runs):.3f} s)" if len(runs) > 1 else ""
        print(f"  {name:22s} {st['seconds']:9.3f} s  {st['words'] / st['seconds']:12.0f} words/s  "
              f"peak {st['peak_mb']:8.1f} MB (input alone {st['input_peak_mb']:.1f} MB){spread}")
    if subset < videos:
        print(f"  ours on all {videos} videos: {full_stats['seconds']:.3f} s, {full_stats['words']} words, "
              f"peak {full_stats['peak_mb']:.1f} MB")
    print(f"  speedup {speedup:.1f}x; max |ours - SDK| {agreement['max_abs_diff']:.2e} over "
          f"{agreement['compared_word_vectors']} word vectors; SDK emitted none for "
          f"{agreement['sdk_missing_word_vectors']} (zero-length or uncovered words), presence mismatches "
          f"{agreement['presence_mismatches']}")
    ok = agreement["max_abs_diff"] <= TOLERANCE and agreement["presence_mismatches"] == 0
    print(f"  agreement: {'OK' if ok else 'FAILED'} (tolerance {TOLERANCE:g})")
    summary = {
        "scale": args.scale, "videos": videos, "sdk_videos": subset, "seconds_per_video": seconds, "words": words,
        "speedup": round(speedup, 2), "max_abs_diff": agreement["max_abs_diff"], "agreement_ok": ok,
        "ours_s": round(ours_stats["seconds"], 4), "ours_s_min": round(min(ours_stats["all_seconds"]), 4),
        "ours_s_max": round(max(ours_stats["all_seconds"]), 4),
        "ours_first_pass_s": round(ours_stats["all_seconds"][0], 4), "sdk_s": round(sdk_stats["seconds"], 3),
        "ours_peak_mb": round(ours_stats["peak_mb"], 1), "sdk_peak_mb": round(sdk_stats["peak_mb"], 1),
        "ours_input_mb": round(ours_stats["input_peak_mb"], 1), "sdk_input_mb": round(sdk_stats["input_peak_mb"], 1),
        "ours_words_per_s": round(words / ours_stats["seconds"]), "sdk_words_per_s": round(words / sdk_stats["seconds"]),
        "compared_word_vectors": agreement["compared_word_vectors"],
        "sdk_missing_word_vectors": agreement["sdk_missing_word_vectors"],
        "presence_mismatches": agreement["presence_mismatches"],
    }
    if subset < videos:
        summary.update(ours_full_s=round(full_stats["seconds"], 3), ours_full_words=full_stats["words"],
                       ours_full_peak_mb=round(full_stats["peak_mb"], 1))
    print(json.dumps(summary))
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
