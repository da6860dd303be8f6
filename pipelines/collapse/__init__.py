"""Frames -> words: `collapse.py` (the SDK's overlap rule, vectorised) and `kernels.py` (its compiled loops)."""

from .collapse import EPSILON, FILLS, MODES, CollapseConfig, Collapsed, Fill, Mode, collapse, collapse_segment

__all__ = ["EPSILON", "FILLS", "MODES", "CollapseConfig", "Collapsed", "Fill", "Mode", "collapse", "collapse_segment"]
