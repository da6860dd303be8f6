"""Benchmark: real-time factor of the raw-video pipeline, per stage and end to end on a 2-worker Dask cluster.

    python bench/video_throughput.py                   # defaults: VideoConfig(), clips x4, 2 workers
    python bench/video_throughput.py --repeats 8 --fps 3 --face none

Clips: /work/shared/data/mosi/raw/*.mp4 (transcripts from mosi/label.csv: forced alignment) and
/work/shared/data/faces/*.mp4 (no transcripts: Whisper runs; the silent ones end as failure rows after ASR,
as they would in a real build). Real-time factor = seconds of video / seconds of wall time (higher is faster).

1. Stages, one process, models warm, every stage on every clip (face and audio also on clips whose words
   fail): decode (probe + 16 kHz audio), words (forced alignment, or Whisper without a transcript), audio
   (openSMILE), face (the chosen backend, which decodes its own frames), text (word vectors). `serial_estimate`
   is 1 / sum(1 / stage factors): one core running every stage.
2. End to end: `build_videos` over `repeats` links to each clip (distinct files, so distinct units) on a
   distributed LocalCluster with 2 worker processes, 1 thread each, with `mmolre build videos`' local-cluster
   settings (pipelines.dask_cluster.local_dask_config: forkserver workers), three builds on the same workers:
   `all_stages_cold` gives the silent clips a placeholder transcript so that every stage (alignment with its
   fallbacks, audio, face, text) runs on every clip, on fresh workers (each imports torch and loads every
   model); `all_stages_warm` repeats it into a new store; `as_is_warm` leaves the silent clips without a
   transcript (they fail after ASR, so that figure flatters). Cluster start-up is reported apart.
   Other work on the machine slows wall time; `worker_cpu_s` (CPU seconds the workers used) and
   `realtime_factor_per_worker_cpu_s` show the pipeline's own cost regardless, and the 1-minute load average
   after each build says how busy the machine was.
   The workers start loading the build's models as they start (pipelines.dask_cluster.WarmUp, as `mmolre build
   videos` does; `--no-warm-up`: on first use); `cold_with_startup` counts the cluster's start-up too (the
   manifests are written before the cluster starts, so no client work hides the workers' start-up).
3. `--ref REV`: this bench on REV's code (a temporary git worktree, MMOLRE_BENCH_TREE) and on this tree's,
   alternating, `--rounds` each, each in a fresh process (stages skipped): medians side by side and the ratios
   this tree / REV. `cold_worker_cpu_s` there is the workers' CPU from their start to the end of the cold build
   (imports, warm-up and model loading included).
The last line printed is one JSON object; `realtime_factor` is the `all_stages_cold` figure (the most
conservative of the three).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# MMOLRE_BENCH_TREE: measure another checkout's code with this harness (`--ref` does, so both sides run the same bench)
TREE = Path(os.environ.get("MMOLRE_BENCH_TREE") or REPO)
sys.path.insert(0, str(TREE))

from pipelines.collapse import collapse_segment  # noqa: E402
from pipelines.extract.audio import extract_audio  # noqa: E402
from pipelines.extract.registry import names  # noqa: E402
from pipelines.extract.text import encode_words  # noqa: E402
from pipelines.extract.words.align import align_transcript  # noqa: E402
from pipelines.extract.words.asr import transcribe  # noqa: E402
from pipelines.extract.words.normalise import transcript_words, written_words  # noqa: E402
from pipelines.media import probe, read_audio  # noqa: E402
from pipelines.recipes.videos import VideoConfig, build_videos  # noqa: E402

DATA = Path(os.environ.get("MMOLRE_SHARED_DATA") or REPO.parent / "shared" / "data")  # env: a git worktree


def clips() -> list[tuple[Path, str | None]]:
    """(video, transcript or None) for every benchmark clip."""
    labels: dict[str, str] = {}
    label_file = DATA / "mosi" / "label.csv"
    if label_file.is_file():
        with label_file.open(newline="") as f:
            labels = {r["id"]: r["text"] for r in csv.DictReader(f)}
    out = [(p, labels.get(p.stem)) for p in sorted((DATA / "mosi" / "raw").glob("*.mp4"))]
    out += [(p, None) for p in sorted((DATA / "faces").glob("*.mp4"))]
    if not out:
        sys.exit(f"no clips under {DATA}")
    return out


def stage_times(items: list[tuple[Path, str | None]], config: VideoConfig) -> dict[str, Any]:
    """Seconds per stage over all clips, after one untimed pass that loads every model."""
    face = next((ex for ex in config.frame_extractors() if ex.kind == "face"), None)
    acfg, tcfg = config.audio_config(), config.text_config()
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)

    def one_pass(timed: dict[str, float]) -> float:
        seconds = 0.0
        for path, transcript in items:
            t = time.perf_counter()
            info = probe(path)
            audio = read_audio(path)
            t_decode = time.perf_counter()
            timed["decode"] += t_decode - t
            duration = info.duration or (len(audio) / 16000 if audio is not None else 0.0)
            seconds += duration
            words = transcript_words(transcript)
            w = None
            if audio is not None:
                if words:
                    w = align_transcript(audio, words, 0.0, config.align_config(), config.asr_config()).words
                else:
                    tr = transcribe(audio, 0.0, config.asr_config())
                    w, transcript = tr.words, tr.text
                words = w.words
            t_words = time.perf_counter()
            timed["words"] += t_words - t_decode
            frames = [extract_audio(audio, 0.0, acfg)]
            t_audio = time.perf_counter()
            timed["audio"] += t_audio - t_words
            if face is not None and info.has_video:
                frames.append(face.extract_video(path, 0.0, duration, config.fps))
            t_face = time.perf_counter()
            timed["face"] += t_face - t_audio
            encode_words([words or ["silence"]], tcfg, [written_words(transcript, words) if words else ["silence"]])
            t_text = time.perf_counter()
            timed["text"] += t_text - t_face
            if w is not None:  # as the store writer does, per frame-level set
                for fr in frames:
                    collapse_segment(fr, w)
            timed["collapse"] += time.perf_counter() - t_text
        return seconds

    stages = ("decode", "words", "audio", "face", "text", "collapse")
    one_pass({k: 0.0 for k in stages})  # load models
    timed = {k: 0.0 for k in stages}
    seconds = one_pass(timed)
    if face is None:
        timed.pop("face")
    rtf = {k: round(seconds / v, 2) if v > 0 else None for k, v in timed.items()}
    serial = seconds / sum(timed.values())
    return {"video_seconds": round(seconds, 2), "stage_seconds": {k: round(v, 3) for k, v in timed.items()},
            "stage_realtime_factor": rtf, "serial_estimate": round(serial, 2)}


PLACEHOLDER = "nothing is said in this clip"


def make_manifest(folder: Path, items: list[tuple[Path, str | None]], repeats: int, name: str,
                  placeholder: str | None) -> tuple[Path, float]:
    """Links to each clip `repeats` times; clips without a transcript get `placeholder` (None: left without)."""
    rows, seconds = [], 0.0
    sub = folder / name
    sub.mkdir()
    for path, transcript in items:
        duration = probe(path).duration or 0.0
        for k in range(repeats):
            link = sub / f"{path.stem}__{k}{path.suffix}"
            link.symlink_to(path)
            rows.append({"video_path": link.name, "segment_id": f"{path.stem}__{k}",
                         "transcript": transcript or placeholder, "split": "train"})
            seconds += duration
    manifest = sub / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return manifest, seconds


def _cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by the calling process: run on every worker."""
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


RUNS = (("all_stages_cold", PLACEHOLDER), ("all_stages_warm", PLACEHOLDER), ("as_is_warm", None))


def end_to_end(items: list[tuple[Path, str | None]], config: VideoConfig, repeats: int, workers: int,
               warm_up: bool = True) -> dict[str, Any]:
    """Three builds on one cluster: every stage on every clip (cold, then warm), then the clips as they are.
    `warm_up`: the workers start loading the build's models as they start (pipelines.dask_cluster.WarmUp, as
    `mmolre build videos` does); `cold_with_startup` counts the cluster's start-up with the cold build."""
    from distributed import Client, LocalCluster

    from pipelines.dask_cluster import local_dask_config, register_warm_up

    tmp = Path(tempfile.mkdtemp(prefix="video_bench_"))
    try:
        manifests = {run: make_manifest(tmp, items, repeats, run, placeholder) for run, placeholder in RUNS}
        t = time.perf_counter()
        settings = local_dask_config()  # the command line's local-cluster settings (forkserver workers, preload)
        settings.__enter__()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        if warm_up:
            register_warm_up(client, config)
        out: dict[str, Any] = {"files": len(items) * repeats, "workers": workers, "warm_up": warm_up,
                               "cluster_startup_s": round(time.perf_counter() - t, 2)}
        try:
            for run, _ in RUNS:
                manifest, seconds = manifests[run]
                cpu0 = sum(client.run(_cpu_seconds).values())
                t = time.perf_counter()
                result = build_videos(manifest, tmp / f"store_{run}", config, executor=client, progress=False)
                wall = time.perf_counter() - t
                cpu = sum(client.run(_cpu_seconds).values()) - cpu0
                counters = json.loads((tmp / f"store_{run}" / "manifest.json").read_text())["report"]["counters"]
                out[run] = {"video_seconds": round(seconds, 2), "wall_s": round(wall, 2),
                            "realtime_factor": round(seconds / wall, 2), "worker_cpu_s": round(cpu, 2),
                            "realtime_factor_per_worker_cpu_s": round(seconds / cpu, 2),
                            "load_avg_1min_after": round(os.getloadavg()[0], 2), "segments": result.n_segments,
                            "failures": result.n_failures,
                            "segments_by_method": {k: v for k, v in counters.items() if k.startswith("segments.")}}
                if run == "all_stages_cold":  # with the cluster's start-up, and the workers' CPU since they started
                    with_startup = out["cluster_startup_s"] + wall
                    out["cold_with_startup"] = {"wall_s": round(with_startup, 2),
                                                "realtime_factor": round(seconds / with_startup, 2),
                                                "worker_cpu_s": round(cpu + cpu0, 2)}
        finally:
            client.close()
            cluster.close()
            settings.__exit__(None, None, None)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _side(tree: Path, passthrough: list[str]) -> dict[str, Any]:
    """One end-to-end run of this bench on `tree`'s code in a fresh process (stages skipped): its last line."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(tree), "MMOLRE_BENCH_TREE": str(tree), "MMOLRE_SHARED_DATA": str(DATA)}
    r = subprocess.run([sys.executable, str(REPO / "bench" / "video_throughput.py"), "--skip-stages", *passthrough],
                       cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        sys.exit(f"bench at {tree} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])["end_to_end"]


def _figures(e2e: dict[str, Any]) -> dict[str, float]:
    cold, warm = e2e["all_stages_cold"], e2e["all_stages_warm"]
    with_startup = cold["video_seconds"] / (e2e["cluster_startup_s"] + cold["wall_s"])
    return {"cold": cold["realtime_factor"], "cold_with_startup": round(with_startup, 2),
            "warm": warm["realtime_factor"], "cold_worker_cpu_s": e2e["cold_with_startup"]["worker_cpu_s"],
            "warm_worker_cpu_s": warm["worker_cpu_s"], "cluster_startup_s": e2e["cluster_startup_s"],
            "load_avg_1min": cold["load_avg_1min_after"]}


def compare_with(ref: str, rounds: int, passthrough: list[str]) -> dict[str, Any]:
    """`ref` (a git revision, checked out into a temporary worktree) against this tree, alternating, `rounds`
    times each, one fresh process per run; medians and this tree / ref ratios (> 1: this tree is faster)."""
    import statistics
    import subprocess

    rev = subprocess.run(["git", "rev-parse", "--short", ref], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    if subprocess.run(["git", "cat-file", "-e", f"{rev}:pipelines/dask_cluster.py"], cwd=REPO,
                      capture_output=True).returncode != 0:
        raise SystemExit(f"--ref {ref}: this harness runs the ref's pipelines.dask_cluster, which {rev} does not have "
                         "(the Dask helpers were in flows/ before fe26791, and bench/ imports no flows)")
    work = Path(tempfile.mkdtemp(prefix="video_bench_ref_"))
    ref_tree = work / "ref"
    subprocess.run(["git", "worktree", "add", "--detach", "--force", str(ref_tree), rev], cwd=REPO, check=True,
                   capture_output=True)
    runs: dict[str, list[dict[str, float]]] = {"ref": [], "tree": []}
    try:
        for k in range(rounds):
            for side, tree in (("ref", ref_tree), ("tree", REPO)):
                runs[side].append(_figures(_side(tree, passthrough)))
                print(json.dumps({"round": k, "side": side, **runs[side][-1]}), flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(ref_tree)], cwd=REPO, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    medians = {side: {key: round(statistics.median(r[key] for r in rs), 2) for key in rs[0]} for side, rs in runs.items()}
    ratios = {key: round(medians["tree"][key] / medians["ref"][key], 2)
              for key in ("cold", "cold_with_startup", "warm") if medians["ref"][key]}
    cpu = {key: round(medians["ref"][key] - medians["tree"][key], 2) for key in ("cold_worker_cpu_s", "warm_worker_cpu_s")}
    for key in ("cold", "cold_with_startup", "warm"):
        print(f"{key:18s} ref {rev}: {medians['ref'][key]:6.2f}x   this tree: {medians['tree'][key]:6.2f}x   "
              f"ratio {ratios.get(key, float('nan')):.2f}")
    return {"bench": "video_throughput", "ref": rev, "rounds": rounds, "median": medians, "ratio_tree_over_ref": ratios,
            "worker_cpu_s_saved": cpu, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=4, help="links per clip in the end-to-end build")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fps", type=float, default=VideoConfig.fps)
    ap.add_argument("--face", default=VideoConfig.face, choices=(*names("face"), "none"), help=f"face backend (default {VideoConfig.face})")
    ap.add_argument("--no-align", action="store_true", help="spread words instead of forced alignment")
    ap.add_argument("--skip-stages", action="store_true")
    ap.add_argument("--no-warm-up", action="store_true", help="workers load models on first use (no WarmUp plugin)")
    ap.add_argument("--ref", help="also run this git revision's copy of the bench, alternating, and print ratios")
    ap.add_argument("--rounds", type=int, default=2, help="with --ref: runs per side")
    args = ap.parse_args()
    if args.ref:
        passthrough = ["--repeats", str(args.repeats), "--workers", str(args.workers), "--fps", str(args.fps),
                       "--face", args.face, *(["--no-align"] if args.no_align else [])]
        print(json.dumps(compare_with(args.ref, args.rounds, passthrough)))
        return
    config = VideoConfig(fps=args.fps, face=None if args.face == "none" else args.face, align=not args.no_align)
    items = clips()
    out: dict[str, Any] = {"config": {"fps": config.fps, "face": config.face, "align": config.align,
                                      "audio": config.audio_set, "threads": config.threads},
                           "clips": [p.name for p, _ in items]}
    if not args.skip_stages:
        out["stages"] = stage_times(items, config)
        print(json.dumps(out["stages"]), flush=True)
    out["end_to_end"] = end_to_end(items, config, args.repeats, args.workers, warm_up=not args.no_warm_up)
    out["realtime_factor"] = out["end_to_end"]["all_stages_cold"]["realtime_factor"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
