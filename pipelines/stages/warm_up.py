"""A build worker's start-up: load the build's models once per process, ahead of the first unit."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np

from ..records import FrameFeatures, Words
from .video_config import VideoConfig

log = logging.getLogger(__name__)
_WARM_LOCK = threading.Lock()
_WARMING: dict[str, threading.Thread] = {}  # VideoConfig (as JSON) -> the thread loading its models
WARM_UP_WAIT_S = 300.0  # a warm-up still running after this long is not waited for: the unit loads what it needs


def torch_threads(threads: int | None) -> None:
    """Import torch and set its intra-op threads, before a torch model (the face backends' networks) runs."""
    import torch

    if threads:
        torch.set_num_threads(threads)


def warm_up(config: VideoConfig) -> dict[str, float]:
    """Import and load everything a unit of `config` runs (torch, the frame extractors, the aligner, the
    recogniser when the build may transcribe, the text encoder, the compiled collapse kernels), so the first unit
    does not pay for it. Returns seconds per step. An extractor that fails to load is skipped: the unit that
    needs it reports why."""
    seconds: dict[str, float] = {}

    def step(name: str, fn: Any) -> None:
        t = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - the unit loads it again and fails with its own error
            log.debug("warm-up %s: %s: %s", name, type(e).__name__, e)
        seconds[name] = round(time.perf_counter() - t, 3)

    step("torch", lambda: torch_threads(config.threads))
    for ex in config.frame_extractors():
        step(ex.name, ex.load)
    if config.align:
        step(config.aligner, lambda: config.aligner_extractor().load())
    if config.transcribe or config.asr_fallback:
        step(config.asr, lambda: config.recogniser().load())
    step("text", lambda: config.text_encoder().load())
    step("collapse", _warm_collapse)
    log.debug("model warm-up: %s", seconds)
    return seconds


def _warm_collapse() -> None:
    """Run the collapse kernels once: the extension `make install` compiled loads in ~0.003 s; without it,
    numba's first call loads its cache and target (~0.5 s)."""
    from ..collapse import collapse_segment

    frames = FrameFeatures(np.array([0.0, 0.1]), np.array([0.1, 0.2]), np.zeros((2, 2), np.float32),
                           valid=np.array([True, False]))
    words = Words(["a"], np.array([0.0]), np.array([0.2]), np.ones(1, np.float32), "forced")
    collapse_segment(frames, words)
    collapse_segment(replace(frames, valid=None), words)


def start_warm_up(config: VideoConfig) -> bool:
    """Start `warm_up(config)` in a background thread of this process (a build worker as it starts: its models
    load while the client plans the build). The first unit of that configuration waits for it rather than
    loading the same models at the same time. False when one was already started."""
    import json

    key = json.dumps(config.to_dict(), sort_keys=True, default=str)
    with _WARM_LOCK:
        if key in _WARMING:
            return False
        thread = threading.Thread(target=warm_up, args=(config,), name="mmolre-warm-up", daemon=True)
        _WARMING[key] = thread
        thread.start()
    return True


def await_warm_up() -> None:
    """Wait for warm-ups started in this process (none: returns at once)."""
    for thread in list(_WARMING.values()):
        if thread is not threading.current_thread() and thread.is_alive():
            thread.join(WARM_UP_WAIT_S)
            if thread.is_alive():
                log.warning("model warm-up still running after %.0f s; the unit loads its models itself", WARM_UP_WAIT_S)
