"""One list of recipes (pipelines/recipes/registry.py) makes the `mmolre build` subcommands, the Prefect flows,
the served deployments and prefect.yaml: every name users know is still there, each recipe's options reach its
plan the same way from the command line and from its flow, and a new recipe needs no edit outside its file."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from flows.build_cli import add_build_commands, recipe_values
from flows.build_features import FLOWS, recipe_flow
from flows.cli import parser
from flows.serve import all_flows, prefect_yaml
from pipelines.recipes.base import Recipe, option
from pipelines.recipes.registry import RECIPES, recipe
from pipelines.store_writer import BuildConfig, BuildPlan

REPO = Path(__file__).resolve().parents[1]

# What users and scripts already call: subcommands, flow names, entrypoint functions (kept by the generation).
KNOWN = {
    "mosei": ("build-mosei-features", "build_mosei_features"),
    "mosi": ("build-mosi-features", "build_mosi_features"),
    "videos": ("extract-video-features", "extract_video_features"),
    "mmsa": ("build-mmsa-features", "build_mmsa_features"),
    "mosi-utterance": ("build-mosi-utterance", "build_mosi_utterance"),
    "mosei-text": ("build-mosei-text-features", "build_mosei_text_features"),
}


def test_committed_prefect_yaml_is_the_generated_one() -> None:
    assert (REPO / "prefect.yaml").read_text() == prefect_yaml(), \
        "prefect.yaml is stale: run `python -m flows.serve --write-prefect-yaml` and commit it"


def test_every_known_name_is_generated_from_the_list() -> None:
    listed = {r.name: (r.flow, r.function) for r in RECIPES}
    assert KNOWN.items() <= listed.items()  # a new recipe adds names; none that users know goes
    for key in ("name", "flow", "function"):
        assert len({getattr(r, key) for r in RECIPES}) == len(RECIPES), f"two recipes share a {key}"
    assert [f.name for f in all_flows()] == [r.flow for r in RECIPES] + ["train-mmolre", "video-to-model"]
    assert {name: f.name for name, f in FLOWS.items()} == {fn: flow for flow, fn in listed.values()}
    import flows.build_features as module

    assert all(getattr(module, fn) is FLOWS[fn] for _, fn in listed.values())  # prefect.yaml's entrypoints
    build = next(a for a in parser()._subparsers._group_actions if a.dest == "command").choices["build"]
    assert list(build._subparsers._group_actions[0].choices) == list(listed)
    assert recipe("build-mmsa-features") is recipe("mmsa")
    with pytest.raises(KeyError, match="no recipe 'nope' \\(known: mosei, mosi, videos"):
        recipe("nope")


@pytest.mark.parametrize("r", RECIPES, ids=lambda r: r.name)
def test_flow_parameters_are_the_recipe_options_and_all_described(r: Recipe) -> None:
    flow = FLOWS[r.function]
    props = flow.parameters.properties
    options = [o.name for o in r.option_specs()]
    common = (["mode", "keep_frames"] if r.collapse else []) + ["dask_address", "n_workers", "units_per_shard",
                                                                 "overwrite"]
    assert set(props) == {*options, "store", *common}
    assert [p for p, v in props.items() if not v.get("description")] == []
    assert flow.parameters.required == [o.name for o in r.option_specs() if o.required] + ["store"]
    assert props["units_per_shard"]["default"] == r.units_per_shard


def _plans(r: Recipe, argv: list[str], params: dict[str, Any]) -> tuple[Any, Any]:
    """The options the CLI and the flow hand the recipe's plan function for the same settings."""
    seen: list[Any] = []

    def capture(options: Any, config: BuildConfig) -> BuildPlan:
        seen.append((options, config))
        raise StopIteration

    probe = dataclasses.replace(r, plan=capture)
    args = parser().parse_args(["build", r.name, *argv, "--out", "/tmp/x", "--workers", "0"])
    assert args.recipe is r
    with pytest.raises(StopIteration):
        probe.build_plan(recipe_values(r, args), BuildConfig())
    with pytest.raises(StopIteration):
        probe.build_plan(params, BuildConfig())
    return seen[0][0], seen[1][0]


def test_cli_flags_and_flow_parameters_give_the_same_options() -> None:
    cli, fl = _plans(recipe("mmsa"), ["--input", "a.pkl", "--aligned", "yes", "--text-name", "bert"],
                     {"input": "a.pkl", "aligned": True, "text_name": "bert", "store": "s"})
    assert cli == fl and cli.aligned is True and cli.vision_name is None
    cli, fl = _plans(recipe("mosei"), ["--csd-dir", "d", "--sets", "covarep", "glove", "--batch-videos", "2"],
                     {"csd_dir": "d", "sets": ["covarep", "glove"], "batch_videos": 2})
    assert cli == fl and cli.batch_videos == 2
    cli, fl = _plans(recipe("videos"), ["--input", "m.csv", "--face", "none", "--fps", "2.5"],
                     {"input": "m.csv", "face": "none", "fps": 2.5})
    assert cli == fl and cli.fps == 2.5


def test_the_cli_refuses_a_bad_choice_and_a_missing_input(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["build", "videos", "--input", "x", "--face", "nope", "--out", "o"], ["build", "mosei-text", "--out", "o"]):
        with pytest.raises(SystemExit) as e:
            parser().parse_args(argv)
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "the following arguments are required: --input" in err


# A dataset added outside the list's file: a recipe is data, so the generators take it as it is.
@dataclasses.dataclass(frozen=True)
class _ToyOptions:
    input: str = option(help="the toy file", path=True)
    rate: float = option(0.5, "how much", flow_help="How much of it to use.")
    tags: list[str] | None = option(None, "tags to keep")
    exact: bool = option(False, "be exact")


def _toy_plan(options: _ToyOptions, config: BuildConfig) -> BuildPlan:
    raise NotImplementedError


def test_a_new_recipe_gets_its_subcommand_and_flow_from_its_declaration() -> None:
    import argparse

    toy = Recipe("toy", "a toy dataset", _ToyOptions, _toy_plan, flow="build-toy", function="build_toy", collapse=False)
    flow = recipe_flow(toy)
    assert flow.name == "build-toy" and flow.fn.__name__ == "build_toy"
    assert list(flow.parameters.properties) == ["input", "store", "rate", "tags", "exact", "dask_address", "n_workers",
                                                "units_per_shard", "overwrite"]
    assert flow.parameters.properties["rate"]["description"] == "How much of it to use."
    assert flow.description.startswith("A toy dataset.")
    sub = argparse.ArgumentParser().add_subparsers()
    add_build_commands(sub, [toy])
    args = sub.choices["toy"].parse_args(["--input", "f", "--rate", "2", "--tags", "a", "b", "--exact", "--out", "o"])
    assert (args.input, args.rate, args.tags, args.exact, args.recipe) == ("f", 2.0, ["a", "b"], True, toy)
