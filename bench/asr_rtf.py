"""Real-time factor of the two packaged recognisers side by side: Whisper tiny.en (English) and Whisper base
(multilingual, language detection), each on one thread (one core), on the same speech.

    python bench/asr_rtf.py                      # ../shared/data's two-speaker wav (first 30 s) and the MOSI clip
    python bench/asr_rtf.py --audio x.wav --repeats 3

RTF = seconds spent / seconds of audio (below 1: faster than real time). CPU seconds (this process's, so other
processes on a busy machine do not count) and wall seconds are both printed; the ratio base / tiny.en is
measured in the same run, the two models taking turns. Models are loaded before timing; both decode greedily
with word timestamps and the VAD filter, as a build does. Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
DATA = Path(os.environ.get("MMOLRE_SHARED_DATA", HERE.parent / "shared" / "data"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio", nargs="+", type=Path, default=None, help="media files (default: shared/data speech)")
    ap.add_argument("--seconds", type=float, default=30.0, help="at most this much of each file")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from pipelines.extract import registry
    from pipelines.media import SAMPLE_RATE, read_audio

    files = args.audio or [DATA / "speech" / "two_speakers_16k.wav", DATA / "mosi" / "raw" / "Oz06ZWiO20M_6.mp4"]
    clips = [read_audio(f)[: int(args.seconds * SAMPLE_RATE)] for f in files]
    audio_s = sum(len(c) for c in clips) / SAMPLE_RATE
    models = {"whisper (tiny.en)": registry.get("whisper", "asr", threads=1),
              "whisper-base (multilingual)": registry.get("whisper-base", "asr", threads=1)}
    for m in models.values():
        m.load()
    cpu = dict.fromkeys(models, 0.0)
    wall = dict.fromkeys(models, 0.0)
    for _ in range(args.repeats):
        for name, m in models.items():
            for clip in clips:
                c0, w0 = time.process_time(), time.perf_counter()
                m.recognise(clip, 0.0, None)  # base: detects the language as a build of `und` rows does
                cpu[name] += time.process_time() - c0
                wall[name] += time.perf_counter() - w0
    total = audio_s * args.repeats
    out = {"bench": "asr_rtf", "audio_s": round(audio_s, 1), "repeats": args.repeats, "threads": 1,
           "rtf_cpu": {n: round(v / total, 3) for n, v in cpu.items()},
           "rtf_wall": {n: round(v / total, 3) for n, v in wall.items()}}
    names = list(models)
    out["base_over_tiny_cpu"] = round(cpu[names[1]] / cpu[names[0]], 2)
    for n in names:
        print(f"{n}: RTF {out['rtf_cpu'][n]:.3f} (CPU s per audio s, 1 thread), wall {out['rtf_wall'][n]:.3f}")
    print(f"base / tiny.en CPU time: {out['base_over_tiny_cpu']}x over {audio_s:.1f} s of audio x {args.repeats}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
