"""Writing a store out in other tools' formats: `.csd` (csd.py) and MMSA pickles (mmsa.py)."""
