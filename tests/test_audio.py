"""openSMILE features of real speech: dimensions by name, intervals from openSMILE's index, masks."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.extract.audio import AudioConfig, audio_feature_set, extract_audio
from pipelines.extract.base import empty_frames
from pipelines.media import cut, read_audio
from tests import media_fixtures as mf


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    mf.need(mf.MOSI_CLIP)
    return read_audio(mf.MOSI_CLIP)


def test_egemaps_lld_of_real_clip(speech: np.ndarray) -> None:
    fs = audio_feature_set()
    assert fs.name == "egemaps" and fs.dim == 25 and fs.modality == "audio" and fs.extractor == "opensmile"
    assert fs.dims[0] == "Loudness_sma3" and "F0semitoneFrom27.5Hz_sma3nz" in fs.dims
    assert fs.frame_rate == 100.0 and fs.extractor_version and fs.config["opensmile_feature_set"] == "eGeMAPSv02"
    fr = extract_audio(speech, offset=0.0)
    n = len(fr.start)
    assert fr.values.shape == (n, 25) and 700 < n < 760
    assert np.isfinite(fr.values).all() and fr.valid.all()
    assert np.allclose(np.diff(fr.start), 0.01) and (fr.end > fr.start).all()
    assert fr.start[0] == 0.0 and fr.end[-1] <= len(speech) / 16000 + 0.07
    loudness = fr.values[:, 0]
    assert loudness.max() > 0.3 and loudness.std() > 0.05  # real speech, not a constant


def test_intervals_shift_by_segment_start(speech: np.ndarray) -> None:
    whole = extract_audio(speech)
    part = extract_audio(cut(speech, 2.0, 4.0), offset=2.0)
    assert part.start[0] == pytest.approx(2.0) and part.end[-1] <= 4.07
    # the same audio gives the same values wherever it sits (frames away from the cut's edges)
    i = np.searchsorted(whole.start, 3.0)
    j = np.searchsorted(part.start, 3.0)
    assert whole.start[i] == pytest.approx(part.start[j])
    assert np.allclose(whole.values[i, :6], part.values[j, :6], rtol=0.05, atol=0.05)


def test_compare_and_functionals(speech: np.ndarray) -> None:
    cfg = AudioConfig("compare")
    fs = audio_feature_set(cfg)
    fr = extract_audio(speech, 1.0, cfg)
    assert fs.name == "compare" and fs.dim == 65 and fr.values.shape[1] == 65 and fr.start[0] == 1.0
    func = AudioConfig("egemaps", "functionals")
    ffs = audio_feature_set(func)
    f = extract_audio(speech, 1.0, func)
    assert ffs.name == "egemaps_functionals" and ffs.dim == 88 and ffs.frame_rate is None
    assert f.values.shape == (1, 88) and f.start[0] == 1.0 and f.end[0] == pytest.approx(1.0 + len(speech) / 16000)
    with pytest.raises(ValueError, match="choose one of"):
        AudioConfig("mfcc")


def test_no_audio_and_too_short_audio_are_masked() -> None:
    none = extract_audio(None, 3.0)
    assert none.values.shape == (0, 25) and len(none.valid) == 0
    assert empty_frames(7).values.shape == (0, 7)
    short = extract_audio(np.zeros(50, np.float32), 3.0, AudioConfig("egemaps", "functionals"))
    assert not short.valid.any()


def _smile_reference(samples: np.ndarray, feature_set: str, level: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What opensmile's own API gives for the same input (Smile builds one level per object)."""
    import warnings

    import opensmile

    sets = {"egemaps": opensmile.FeatureSet.eGeMAPSv02, "compare": opensmile.FeatureSet.ComParE_2016}
    levels = {"lld": opensmile.FeatureLevel.LowLevelDescriptors, "functionals": opensmile.FeatureLevel.Functionals}
    smile = opensmile.Smile(feature_set=sets[feature_set], feature_level=levels[level])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        df = smile.process_signal(samples, 16000)
    return (df.index.get_level_values("start").total_seconds().to_numpy(), df.index.get_level_values("end")
            .total_seconds().to_numpy(), df.to_numpy(np.float32)), list(smile.feature_names)


@pytest.mark.parametrize("feature_set", ["egemaps", "compare"])
def test_one_run_gives_what_opensmile_smile_gives_per_level(speech: np.ndarray, feature_set: str) -> None:
    """One openSMILE run yields both levels, equal value for value to opensmile.Smile's two runs: real speech,
    an odd-length cut, noise past full scale (the int16 conversion wraps as Smile's does) and audio too short
    for one frame (Smile's NaN row)."""
    from pipelines.extract.audio import feature_names, run_opensmile

    rng = np.random.default_rng(0)
    inputs = {"speech": speech, "cut": cut(speech, 1.234, 3.0)[:-7],
              "loud noise": (rng.standard_normal(8001) * 0.8).astype(np.float32), "short": speech[:50]}
    for name, samples in inputs.items():
        ours = run_opensmile(samples, feature_set)
        for level in ("lld", "functionals"):
            (start, end, values), names = _smile_reference(samples, feature_set, level)
            got = ours[level]
            assert feature_names(feature_set, level) == tuple(names), (name, level)
            assert np.array_equal(got[0], start) and np.array_equal(got[1], end), (name, level)
            assert got[2].dtype == np.float32 and np.array_equal(got[2], values, equal_nan=True), (name, level)
    assert np.isnan(run_opensmile(speech[:50], feature_set)["lld"][2]).all()


def test_extractor_gives_frames_and_functionals_of_one_run(speech: np.ndarray) -> None:
    from pipelines.extract.audio import EgemapsExtractor, extract_functionals
    from pipelines.extract.base import SegmentMedia

    ex = EgemapsExtractor()
    seg = SegmentMedia("s", 2.0, 2.0 + len(speech) / 16000, audio=speech)
    frames, functionals = ex.extract_with_utterance(seg)
    apart = ex.extract(seg)
    assert np.array_equal(frames.start, apart.start) and np.array_equal(frames.values, apart.values)
    assert frames.start[0] == 2.0
    assert functionals is not None and np.array_equal(functionals, extract_functionals(speech))
    assert np.array_equal(functionals, ex.utterance(seg, frames))
    assert ex.extract_with_utterance(SegmentMedia("s", 0.0, 0.0, audio=speech[:50]))[1] is None  # NaN row: absent
    empty, none = ex.extract_with_utterance(SegmentMedia("s", 0.0, 1.0, audio=None))
    assert empty.values.shape == (0, 25) and none is None
