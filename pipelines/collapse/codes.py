"""The integer codes the collapse kernels share with their caller, apart from numba (importing numba costs ~0.2 s)."""

MEAN, WEIGHTED, MAX, STD = 0, 1, 2, 3
MODES = {"mean": MEAN, "weighted": WEIGHTED, "max": MAX, "std": STD}
UNKNOWN, FINITE, NONFINITE = 0, 1, 2  # a frame's finiteness, learnt as the kernels read it
