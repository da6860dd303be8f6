"""Decoding real clips and broken files: audio at 16 kHz mono, frames at a chosen rate (the face backends'
sampler), clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import PipelineError
from pipelines.extract.face.frames import SampledFrames, sample_frames
from pipelines.media import SAMPLE_RATE, cut, probe, read_audio, to_pcm16
from tests import media_fixtures as mf


def pictures(frames: SampledFrames) -> list[tuple[float, np.ndarray]]:
    """(interval start, image) of the intervals that have a decoded image."""
    return [(float(t), im) for t, im in zip(frames.start, frames.images, strict=True) if im is not None]


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    mf.need(mf.MOSI_CLIP, mf.FACE_CLIP)
    d = tmp_path_factory.mktemp("broken_media")
    return {
        "zero": mf.zero_byte(d),
        "truncated": mf.truncated(d),
        "faststart_truncated": mf.faststart_truncated(d),
        "corrupt": mf.corrupt(d),
        "no_audio": mf.without_audio(d),
        "frames_only": mf.silent_frames_video(d),
    }


def test_real_clip_audio_and_frames() -> None:
    mf.need(mf.MOSI_CLIP)
    info = probe(mf.MOSI_CLIP)
    assert info.has_audio and info.has_video and info.fps == pytest.approx(30.0)
    assert (info.width, info.height) == (480, 360) and info.duration == pytest.approx(7.5, abs=0.05)
    audio = read_audio(mf.MOSI_CLIP)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) / SAMPLE_RATE == pytest.approx(7.44, abs=0.05)
    assert np.isfinite(audio).all() and 0.1 < np.abs(audio).max() <= 1.0
    frames = pictures(sample_frames(mf.MOSI_CLIP, None, None, 5, max_height=None, colour=True))
    times = [t for t, _ in frames]
    assert times[:3] == pytest.approx([0.0, 0.2, 0.4]) and len(frames) == 38
    assert all(img.shape == (360, 480, 3) and img.dtype == np.uint8 for _, img in frames)
    assert len({int(img.mean()) for _, img in frames}) > 1  # real, changing pictures


def test_cuts_agree_with_whole_decode() -> None:
    mf.need(mf.MOSI_CLIP)
    whole = read_audio(mf.MOSI_CLIP)
    part = read_audio(mf.MOSI_CLIP, 2.0, 4.5)
    assert len(part) == int(2.5 * SAMPLE_RATE)
    ref = cut(whole, 2.0, 4.5)
    assert len(ref) == len(part)
    assert np.corrcoef(ref, part)[0, 1] > 0.99
    frames = pictures(sample_frames(mf.MOSI_CLIP, 3.0, 5.0, 2, max_height=180, colour=True))
    assert [t for t, _ in frames] == pytest.approx([3.0, 3.5, 4.0, 4.5])
    assert frames[0][1].shape == (180, 240, 3)
    pcm = to_pcm16(part)
    assert len(pcm) == 2 * len(part)


def test_wav_has_audio_but_no_video() -> None:
    mf.need(mf.TWO_SPEAKERS)
    info = probe(mf.TWO_SPEAKERS)
    assert info.has_audio and not info.has_video and info.duration == pytest.approx(30.0, abs=0.1)
    assert len(read_audio(mf.TWO_SPEAKERS)) == pytest.approx(30 * SAMPLE_RATE, abs=10)
    with pytest.raises(PipelineError, match="no video stream"):
        sample_frames(mf.TWO_SPEAKERS, None, None, 5)


def test_broken_files_give_clear_errors(broken: dict[str, Path]) -> None:
    with pytest.raises(PipelineError, match=r"zero.mp4: file is empty \(0 bytes\)") as e:
        probe(broken["zero"])
    assert e.value.stage == "decode" and e.value.source_path == str(broken["zero"])
    for name in ("truncated", "corrupt"):
        with pytest.raises(PipelineError, match="cannot open as media"):
            read_audio(broken[name])
        with pytest.raises(PipelineError, match="cannot open video"):
            sample_frames(broken[name], None, None, 5)
    with pytest.raises(PipelineError, match="does not exist"):
        probe(broken["zero"].parent / "absent.mp4")


def test_truncated_with_index_first_decodes_what_is_there(broken: dict[str, Path]) -> None:
    info = probe(broken["faststart_truncated"])
    assert info.duration == pytest.approx(7.5, abs=0.05)  # the container's claim
    audio = read_audio(broken["faststart_truncated"])
    assert 1.0 < len(audio) / SAMPLE_RATE < 6.0
    # the face sampler does not guess past damage: our error, naming the file and how far it decoded
    with pytest.raises(PipelineError, match=r"faststart_truncated.*corrupt or truncated: decoding failed after \d+ frames"):
        sample_frames(broken["faststart_truncated"], None, None, 5)


def test_video_without_audio_stream(broken: dict[str, Path]) -> None:
    for name in ("no_audio", "frames_only"):
        info = probe(broken[name])
        assert info.has_video and not info.has_audio
        assert read_audio(broken[name]) is None
    frames = pictures(sample_frames(broken["no_audio"], None, None, 5, max_height=None, colour=True))
    assert len(frames) == 12 and frames[0][1].shape == (360, 640, 3)
    assert len(pictures(sample_frames(broken["frames_only"], None, None, 5))) == 10


def test_paths_that_are_not_regular_files_say_what_they_are(tmp_path: Path) -> None:
    """A folder, FIFO, device or symlink loop given as a video is named for what it is (a FIFO would block the
    decoder forever if opened), in `probe` and as a manifest's failure row."""
    import os
    import re

    from pipelines.inputs import read_manifest

    (tmp_path / "folder.mp4").mkdir()
    os.mkfifo(tmp_path / "pipe.mp4")
    (tmp_path / "loop.mp4").symlink_to(tmp_path / "loop.mp4")
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    expected = {"folder.mp4": "is a folder, not a media file", "pipe.mp4": "is a named pipe (FIFO)",
                "loop.mp4": "is a symbolic link loop", "dangling.mp4": "is a broken symbolic link",
                "absent.mp4": "does not exist"}
    for name, message in expected.items():
        with pytest.raises(PipelineError, match=re.escape(f"{name}: {message}")):
            probe(tmp_path / name)
    with pytest.raises(PipelineError, match="/dev/null: is a device, not a media file"):
        probe("/dev/null")
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_path,transcript\n" + "".join(f"{n},hi\n" for n in [*expected, "/dev/null"]))
    parsed = read_manifest(manifest)
    assert not parsed.specs
    reasons = " | ".join(f.reason for f in parsed.failures)
    for message in [*expected.values(), "is a device"]:
        assert message in reasons
