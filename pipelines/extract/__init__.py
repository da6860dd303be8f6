"""Extractors: every audio, face, text and words extractor behind one interface (base.py), found by name in
the registry (registry.py)."""

from .base import Extractor, FrameExtractor, SegmentMedia, empty_frames
from .registry import ExtractorInfo, describe, get, names, register

__all__ = ["Extractor", "ExtractorInfo", "FrameExtractor", "SegmentMedia", "describe", "empty_frames", "get", "names",
           "register"]
