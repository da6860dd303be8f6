"""CPU cost per frame of the default dlib face backend on the real clips in ../shared/data.

    .venv/bin/python bench/face_cost.py

Reports CPU time (process_time, best of 3) so a busy machine does not skew it; last line is JSON."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pipelines.face import get_backend

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FILES = ["mosi/raw/Oz06ZWiO20M_6.mp4", "faces/single_face.mp4", "faces/no_face.mp4", "faces/face_noface.mov",
         "faces/WolfgangLanger_Pexels.mp4"]


def main() -> int:
    files = [DATA / f for f in FILES if (DATA / f).is_file()]
    if not files:
        print(f"no clips under {DATA}", file=sys.stderr)
        return 1
    backend = get_backend("dlib")
    backend.extract(files[0])  # load models, warm caches
    tot_t = tot_n = tot_s = 0.0
    for f in files:
        best = float("inf")
        for _ in range(3):
            t = time.process_time()
            ff = backend.extract(f)
            best = min(best, time.process_time() - t)
        n, dur = len(ff.start), float(ff.end[-1])
        tot_t, tot_n, tot_s = tot_t + best, tot_n + n, tot_s + dur
        print(f"{f.name:28s} {n:4d} frames  face {ff.valid.mean():.2f}  {best / n * 1000:6.1f} ms/frame  "
              f"{dur / best:5.1f}x real time (one core)")
    print(json.dumps({"ms_per_frame": round(tot_t / tot_n * 1000, 2), "realtime_factor_one_core": round(tot_s / tot_t, 2),
                      "fps": backend.fps, "frames": int(tot_n)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
