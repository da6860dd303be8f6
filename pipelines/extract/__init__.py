"""Extractors: every audio, face and text extractor, aligner and speech recogniser behind one interface
(base.py), found by name in the registry (registry.py), where each registers with `@register(kind, name)`."""

from .base import Extractor, FrameExtractor, SegmentMedia, empty_frames
from .registry import ExtractorInfo, describe, get, names, register

__all__ = ["Extractor", "ExtractorInfo", "FrameExtractor", "SegmentMedia", "describe", "empty_frames", "get", "names",
           "register"]
