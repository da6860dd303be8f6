"""Serve every mmolre deployment from this process: `python -m flows.serve` (or `make serve`).

Deployments are named `default`, so `prefect deployment run build-mosei-features/default --param ...` works as soon
as this is running against a Prefect server (PREFECT_API_URL)."""

from __future__ import annotations

import logging

DEPLOYMENT_NAME = "default"


def all_flows() -> list:
    from flows.build_features import (
        build_mmsa_features,
        build_mosei_features,
        build_mosi_features,
        build_mosi_utterance,
        extract_video_features,
    )
    from flows.train_model import train_mmolre
    from flows.video_to_model import video_to_model

    return [build_mosei_features, build_mosi_features, extract_video_features, build_mmsa_features, train_mmolre,
            video_to_model, build_mosi_utterance]


def summary_line(description: str | None) -> str | None:
    """A flow's docstring up to its `Args:` section (those become the parameters' own descriptions)."""
    return " ".join((description or "").split("\n\n", 1)[0].split()) or None


def deployments(name: str = DEPLOYMENT_NAME) -> list:
    return [f.to_deployment(name=name, tags=["mmolre"], description=summary_line(f.description)) for f in all_flows()]


def main() -> None:
    from prefect import serve

    logging.basicConfig(level=logging.INFO)
    serve(*deployments(), limit=2)


if __name__ == "__main__":
    main()
