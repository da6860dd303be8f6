"""`mmolre build <recipe>`: one subcommand per recipe of pipelines.recipes.registry, a flag per recipe option (its
type says how), the shared build settings, the build on local Dask workers or inline, and its summary."""

from __future__ import annotations

import argparse
import json
import sys
import typing
from collections.abc import Sequence
from typing import Any

from flows.cli import EXIT_EMPTY, EXIT_ERROR, EXIT_FAILURES, EXIT_OK, _escape
from flows.options import build_config, count, fraction, rate, seed, workers
from flows.summary import word_times_line
from pipelines.collapse import MODES
from pipelines.recipes.registry import RECIPES


def _build_config(args: argparse.Namespace, units_per_shard: int) -> Any:
    return build_config(args.mode, args.fill, args.keep_frames, args.units_per_shard or units_per_shard)


def _run_plan(plan: Any, args: argparse.Namespace) -> int:
    from flows.summary import summarize_build
    from pipelines.build import run_build
    from pipelines.dask_cluster import dask_client, warm_config

    if args.workers == 0:
        result = run_build(plan, args.out, executor=None, show_bar=not args.quiet, overwrite=args.overwrite)
    else:
        warm = warm_config(plan)
        with dask_client(args.dask_address, args.workers, warm=warm, preload=warm is not None) as client:
            result = run_build(plan, args.out, executor=client, show_bar=not args.quiet, overwrite=args.overwrite)
    summary = summarize_build(result)
    _print_build(summary, args.json)
    if summary["incomplete_shards"]:
        return EXIT_ERROR
    if not sum(summary["counts"]["segments"].values()):
        print(f"mmolre: error: {_escape(summary['store'])}: the build wrote no segment ({summary['counts']['failures']} "
              "failures)" + ("; most common reasons:" if summary["top_failure_reasons"] else
                             "; the input had no usable rows"), file=sys.stderr)
        for r in summary["top_failure_reasons"]:
            print(f"  {r['count']} x [{r['stage']}] {r['example']!r}"[:400], file=sys.stderr)
        return EXIT_EMPTY
    return EXIT_FAILURES if (args.strict and summary["counts"]["failures"]) else EXIT_OK


def _print_build(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    c = summary["counts"]
    print(f"store: {_escape(summary['store'])}")
    print("segments: " + ", ".join(f"{s} {n}" for s, n in c["segments"].items()))
    print(f"shards: {c['shards_written']} written, {c['shards_skipped']} already written")
    print("feature sets: " + ", ".join(f"{n} ({d})" for n, d in summary["feature_sets"].items()))
    if summary.get("word_times"):
        print(f"word times: {word_times_line(summary['word_times'])}")
    if c["failures"]:
        print(f"failures: {c['failures']} (see `mmolre inspect {_escape(summary['store'])}`)")
        for f in summary["failures"][:10]:
            print(f"  {_escape(f['item_id'])} [{f['stage']}]: {_escape(f['reason'])}")


def _start_workers_early(args: argparse.Namespace) -> None:
    """A media build with local workers starts their forkserver before planning (see start_forkserver_early)."""
    if args.workers != 0:
        from pipelines.dask_cluster import start_forkserver_early

        start_forkserver_early(args.dask_address)


def cmd_build(args: argparse.Namespace) -> int:
    """`mmolre build <recipe>`: the recipe's options from the flags, its plan, the driver."""
    recipe = args.recipe
    if recipe.media:
        _start_workers_early(args)
    return _run_plan(recipe.build_plan(recipe_values(recipe, args), _build_config(args, recipe.units_per_shard)), args)


def recipe_values(recipe: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The recipe's option values from its flags (`--aligned auto|yes|no` -> None, True, False)."""
    return {o.name: _AUTO.get(v, v) if isinstance(v := getattr(args, o.name), str) and o.type == bool | None else v
            for o in recipe.option_specs()}


def _add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="store folder to create or complete")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a store of another recipe or configuration in --out (only the files its manifest "
                        "lists, its card and build state), or write into a non-empty folder that is not a store")
    p.add_argument("--mode", choices=MODES, default="weighted", help="how frames collapse onto words (mean = the SDK's)")
    p.add_argument("--fill", choices=("zeros", "nearest"), default="zeros", help="vector for words with no usable frame")
    p.add_argument("--keep-frames", action="store_true", help="also write the frame-level (unaligned) sets")
    p.add_argument("--units-per-shard", type=count, default=None,
                   help="work units per Parquet shard (default: 16 for SDK imports, 2 videos for video builds)")
    p.add_argument("--workers", type=workers, default=None, help="local Dask worker processes (0: run inline)")
    p.add_argument("--dask-address", default=None, help="an existing Dask scheduler (or set MMOLRE_DASK_ADDRESS)")
    p.add_argument("--strict", action="store_true", help="exit 3 when any item failed")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


_AUTO = {"auto": None, "yes": True, "no": False}
CHECKS = {"count": count, "rate": rate, "fraction": fraction, "seed": seed}  # a recipe option's `check`


def _add_recipe_option(p: argparse.ArgumentParser, o: Any) -> None:
    """One recipe option as a flag: its type says how (`bool | None`: auto/yes/no, a list: one or more values)."""
    flag = "--" + o.name.replace("_", "-")
    kinds = [t for t in typing.get_args(o.type) if t is not type(None)] or [o.type]
    kind, origin = kinds[0], typing.get_origin(kinds[0])
    if kind is bool:  # `bool | None`: auto (None), yes, no; a plain bool: a switch
        auto = type(None) in typing.get_args(o.type)
        p.add_argument(flag, help=o.help, **({"choices": tuple(_AUTO), "default": "auto"} if auto else {"action": "store_true"}))
        return
    kw: dict[str, Any] = {"help": o.help, "choices": o.allowed()}
    if origin in (list, tuple):
        kw["nargs"] = "+"
    elif kind in (int, float):
        kw["type"] = CHECKS[o.check] if o.check else kind
    p.add_argument(flag, **kw, **({"required": True} if o.required else {"default": o.default}))


def add_build_commands(build: Any, recipes: Sequence[Any] | None = None) -> None:
    """`mmolre build <recipe>` for every recipe of pipelines.recipes.registry (or `recipes`), flags from its typed options."""
    for recipe in RECIPES if recipes is None else recipes:
        p = build.add_parser(recipe.name, help=recipe.help)
        for o in recipe.option_specs():
            _add_recipe_option(p, o)
        _add_build_options(p)
        p.set_defaults(func=cmd_build, recipe=recipe)
