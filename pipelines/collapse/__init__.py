"""Frames -> words: `collapse.py` (the SDK's overlap rule, vectorised) and `kernels.py` (its compiled loops, numba),
`aot.py` (the same loops compiled ahead of time, used where built)."""

from .collapse import EPSILON, FILLS, MODES, CollapseConfig, Collapsed, Fill, Mode, collapse, collapse_segment

__all__ = ["EPSILON", "FILLS", "MODES", "CollapseConfig", "Collapsed", "Fill", "Mode", "collapse", "collapse_segment"]
