"""Every dataset recipe, in the order the command line lists them. `mmolre build <name>`, the Prefect flows
(flows/build_features.py), the served deployments (flows/serve.py) and prefect.yaml are generated from this one
list: adding a dataset is its recipe file (a `Recipe` named RECIPE) plus one entry here."""

from __future__ import annotations

from . import mmsa, mosei_text, mosi_utterance, sdk, videos
from .base import Recipe

RECIPES: tuple[Recipe, ...] = (
    sdk.MOSEI,
    sdk.MOSI,
    videos.RECIPE,
    mmsa.RECIPE,
    mosi_utterance.RECIPE,
    mosei_text.RECIPE,
)


def recipe(name: str) -> Recipe:
    """The recipe called `name` (its CLI name or its flow's name)."""
    for r in RECIPES:
        if name in (r.name, r.flow):
            return r
    raise KeyError(f"no recipe {name!r} (known: {', '.join(r.name for r in RECIPES)})")
