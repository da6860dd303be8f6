"""Words of a segment: normalisation (normalise.py), pronunciations (g2p.py), forced alignment (align.py) and
speech recognition (asr.py)."""
