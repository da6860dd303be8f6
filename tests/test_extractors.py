"""The extractor interface and registry, through the real packages and the real `mmolre extractors` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import PipelineError
from pipelines.extract import registry
from pipelines.extract.base import Extractor, FrameExtractor, SegmentMedia, available
from pipelines.extract.face.pyfeat_backend import WEIGHTS_ENV
from pipelines.extract.words.base import Recogniser, Transcription
from pipelines.records import Words
from tests import media_fixtures as mf

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=full_env,
                          timeout=120)


def test_registry_lists_every_kind_once_without_importing_them() -> None:
    """The registry reads the `@register` decorators from the sources: listing imports no extractor module."""
    code = ("import sys; from pipelines.extract import registry; names = registry.names(); "
            "registry.get('openface', 'face'); help = registry.help_text('face'); "
            "print(names, [m for m in ('torch', 'dlib', 'mediapipe', 'pipelines.extract.face.dlib_backend', "
            "'pipelines.extract.audio') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("[]"), out.stdout  # openface built: neither dlib, torch nor openSMILE's module
    assert registry.names("face")[0] == registry.default("face") == "mediapipe"
    assert {"mediapipe", "mediapipe-faceapi", "dlib", "pyfeat", "openface"} <= set(registry.names("face"))
    assert registry.names("audio")[:2] == ["egemaps", "compare"] and registry.default("asr") == "whisper"
    assert registry.names("text")[0] == "minilm" and registry.names("aligner")[0] == "pocketsphinx"
    assert "whisper" in registry.names("asr")
    assert len(set(registry.names())) == len(registry.names())
    assert "dlib: 68 landmarks" in registry.help_text("face")
    with pytest.raises(PipelineError, match="unknown audio extractor 'mfcc'; choose one of egemaps, compare"):
        registry.get("mfcc", "audio")
    with pytest.raises(PipelineError, match="unknown face backend 'egemaps'"):
        registry.get("egemaps", "face")  # a real name, but not of that kind
    with pytest.raises(PipelineError, match="unknown settings.*levle"):
        registry.get("egemaps", levle="functionals")


def test_every_extractor_has_the_interface() -> None:
    for name in registry.names():
        ex = registry.get(name)
        assert isinstance(ex, Extractor) and ex.name == name and ex.kind in registry.KINDS
        ok, why = ex.availability()
        assert isinstance(ok, bool) and (ok or why)
        fs = ex.feature_set() if ok else None  # one that cannot run here may not know its dims (no model folder)
        if ex.kind in ("aligner", "asr"):
            assert fs is None and ex.version()
        elif fs is not None:
            assert fs.dim == len(fs.dims) > 0 and fs.extractor_version
    assert registry.get("egemaps") is registry.get("egemaps")  # one instance per process and settings
    assert registry.get("compare", level="functionals").feature_set().name == "compare_functionals"


def test_available_checks_modules_then_files(tmp_path: Path) -> None:
    """The shared body of `availability`: a missing module (with its install hint) before any file is looked
    for; then the first line of the files check's error; else available."""
    looked = []

    def files() -> None:
        looked.append(1)
        raise PipelineError(f"{tmp_path}: no weights here.\nDownload them from ...", stage="face")

    assert available(("no_such_module_xyz",), files, " (pip install xyz)") == (
        False, "python package 'no_such_module_xyz' is not installed (pip install xyz)")
    assert not looked
    assert available(("json",), files) == (False, f"{tmp_path}: no weights here.")
    assert available(("json", "numpy"), lambda: None) == (True, "")


def test_audio_extractor_reads_segment_media() -> None:
    """openSMILE through the interface: frames in seconds of the file, and the segment's functionals."""
    mf.need(mf.TWO_SPEAKERS)
    from pipelines.media import cut, read_audio

    audio = cut(read_audio(mf.TWO_SPEAKERS), 6.5, 9.0)
    ex = registry.get("egemaps")
    assert isinstance(ex, FrameExtractor)
    media = SegmentMedia("seg", 6.5, 9.0, mf.TWO_SPEAKERS, audio)
    frames = ex.extract(media)
    assert frames.values.shape[1] == 25 and 6.5 <= frames.start[0] < 6.6 and frames.end[-1] <= 9.0 + 1e-6
    summary = ex.utterance(media, frames)
    assert summary is not None and summary.shape == (ex.utterance_set().dim,) and np.isfinite(summary).all()
    none = ex.extract(SegmentMedia("silent", 0.0, 1.0))  # no audio: no frames, not an error
    assert none.values.shape == (0, 25) and ex.utterance(SegmentMedia("silent", 0.0, 1.0), none) is None


def test_face_extractor_gives_no_frames_for_a_file_without_pictures() -> None:
    mf.need(mf.TWO_SPEAKERS)
    ex = registry.get("openface")
    frames = ex.extract(SegmentMedia("wav", 0.0, 2.0, mf.TWO_SPEAKERS, None, has_video=False))
    assert frames.values.shape == (0, ex.feature_set().dim)


def test_cli_extractors_json_lists_every_extractor() -> None:
    proc = run_cli("extractors", "--json", env={WEIGHTS_ENV: ""})
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert [e["name"] for e in listed] == [n for n in registry.names() if n != "test-silence"]  # not a plug-in here
    for e in listed:
        assert set(e) == {"name", "kind", "dims", "dim_names", "version", "available", "reason"}
        assert e["dims"] is None or e["dims"] == len(e["dim_names"])
    by_name = {e["name"]: e for e in listed}
    for name in ("mediapipe", "egemaps"):  # both ship with their packages: they run here
        assert by_name[name]["available"] is True and by_name[name]["reason"] == ""
    assert by_name["egemaps"]["dims"] == 25 and by_name["egemaps"]["dim_names"][0] == "Loudness_sma3"
    assert by_name["mediapipe"]["kind"] == "face" and "expr_happy" in by_name["mediapipe"]["dim_names"]
    pyfeat = by_name["pyfeat"]  # no local weights here
    assert pyfeat["available"] is False and "weights" in pyfeat["reason"] and pyfeat["dims"] == 168
    speech = by_name["transformers-audio"]  # needs a model folder: why not, in one line
    assert speech["available"] is False and "--audio-model PATH" in speech["reason"] and speech["dims"] is None
    assert by_name["whisper-base"]["kind"] == "asr" and by_name["recognised"]["kind"] == "aligner"


def test_cli_extractors_table() -> None:
    proc = run_cli("extractors", env={WEIGHTS_ENV: ""})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["name", "kind", "dims", "version", "available"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == set(registry.names()) - {"test-silence"}
    assert rows["egemaps"].split()[1:3] == ["audio", "25"] and rows["egemaps"].rstrip().endswith("yes")
    assert "no: pyfeat face backend: no weights folder given" in rows["pyfeat"]


@dataclass(frozen=True)
class _SilenceConfig:
    threads: int = 1


@registry.register("asr", "test-silence")
class _Silence(Recogniser):
    """A recogniser that hears nothing: a plug-in registered outside the package."""

    config_class = _SilenceConfig
    title = "the silent recogniser"

    def version(self) -> str:
        return "1"

    def recognise(self, samples: np.ndarray, offset: float = 0.0, language: str | None = None) -> Transcription:
        return Transcription(Words([], [], [], [], "asr"), "")


def test_a_plugin_cannot_take_a_registered_name() -> None:
    """A plug-in named like a built-in (or an earlier plug-in) is refused, not silently put in its place."""
    for taken, where in (("dlib", "pipelines.extract.face.dlib_backend"), ("test-silence", __name__)):
        with pytest.raises(ValueError, match=f"extractor name '{taken}' is registered twice: {where} and elsewhere"):
            registry.register("asr", taken)(type("Impostor", (_Silence,), {"__module__": "elsewhere"}))
    assert registry.extractor_class("test-silence") is _Silence and registry.extractor_class("dlib").__name__ == "DlibBackend"


def test_a_plugin_registers_by_decorator_and_a_build_chooses_it_by_name() -> None:
    """`--asr test-silence`: the media stage runs the plug-in named, not a hard-coded Whisper."""
    mf.need(mf.TWO_SPEAKERS)
    from pipelines.inputs import SegmentSpec
    from pipelines.records import WorkUnit
    from pipelines.stages.media import MediaUnit, VideoConfig, process_video_unit

    assert registry.names("asr")[-1] == "test-silence" and "hears nothing" in registry.help_text("asr")
    config = VideoConfig(face=None, asr="test-silence", utterance=False)
    assert isinstance(config.recogniser(), _Silence)
    spec = SegmentSpec("s", "v", mf.TWO_SPEAKERS, 0.0, 2.0, None, {}, "train", "manifest")
    result = process_video_unit(WorkUnit("u", "k", MediaUnit(str(mf.TWO_SPEAKERS), (spec,), False)), config)
    assert [f.reason for f in result.failures] == [f"{mf.TWO_SPEAKERS}: segment s has no transcript and the silent "
                                                    "recogniser recognised no speech: no words to build"]
    with pytest.raises(ValueError, match="aligner extractor 'mfa': choose one of pocketsphinx"):
        VideoConfig(aligner="mfa")
