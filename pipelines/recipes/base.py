"""What a dataset recipe declares, once, so that the command line (`mmolre build <name>`), its Prefect flow, the
served deployment and prefect.yaml are generated from it (registry.py lists them; flows/ renders them).

A recipe is a name, a typed options dataclass (the inputs and settings a user gives, each field with its help
text: they become CLI flags and flow parameters), a plan function `(options, BuildConfig) -> BuildPlan`, and how
its builds are presented (flow name, shard noun). The store, the collapse settings, the shard size and where the
shards run are the same for every recipe and are added by flows/.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..store_writer import BuildConfig, BuildPlan

Choices = Sequence[str] | Callable[[], Sequence[str]]
Check = Literal["count", "rate", "fraction", "seed"]  # >= 1; finite > 0; [0, 1); 0 .. 2**32 - 1


def option(default: Any = dataclasses.MISSING, help: str = "", *, choices: Choices | None = None,
           path: bool = False, flow_help: str | None = None, check: Check | None = None) -> Any:
    """A recipe option: a dataclass field with its help (`flow_help`: a longer text for the flow's form, e.g.
    where a deployment reads a path), its allowed values (a list, or a function: registries fill in late),
    whether it is a path (a flow warns where a relative one is read) and the range a number must be in (`check`:
    the command line refuses others as a usage error naming the flag)."""
    meta = {"help": help, "choices": choices, "path": path, "flow_help": flow_help or help, "check": check}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionSpec:
    """One option as the generators see it: name, resolved type, default (MISSING: required) and its texts."""

    name: str
    type: Any
    default: Any
    help: str
    flow_help: str
    choices: Choices | None
    path: bool
    check: Check | None = None

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    def allowed(self) -> list[str] | None:
        c = self.choices() if callable(self.choices) else self.choices
        return None if c is None else list(c)


@dataclass(frozen=True)
class Recipe:
    """One dataset (or input format) the builder knows; registry.RECIPES lists them all."""

    name: str  # `mmolre build <name>`
    help: str  # one line: the CLI's help, the flow's and the deployment's description
    options: type  # a frozen dataclass of `option(...)` fields
    plan: Callable[[Any, BuildConfig], BuildPlan]  # (options, build settings) -> what to build
    flow: str  # the Prefect flow's name, e.g. "build-mosei-features"
    function: str  # its attribute in flows/build_features.py (prefect.yaml's entrypoint)
    units_per_shard: int = 16  # the default shard size (a shard's key covers it: changing it rebuilds)
    unit_help: str = "work units"  # what a unit is, for the `units_per_shard` help
    collapse: bool = True  # frames collapse onto words: the flow takes `mode` and `keep_frames`
    shard_noun: str = "videos"  # a shard's task run is titled `shard 00012: 16 <noun>`
    shard_count_at: tuple[str, ...] = ()  # where a unit's payload lists what it holds (none: a unit counts one)
    media: bool = False  # decodes media: the command line starts its workers' forkserver before planning
    deployment: str = "default"

    def option_specs(self) -> list[OptionSpec]:
        hints = typing.get_type_hints(self.options)
        out = []
        for f in dataclasses.fields(self.options):
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            m = f.metadata
            out.append(OptionSpec(f.name, hints[f.name], default, m.get("help", ""), m.get("flow_help") or
                                  m.get("help", ""), m.get("choices"), bool(m.get("path")), m.get("check")))
        return out

    def build_plan(self, values: dict[str, Any], config: BuildConfig) -> BuildPlan:
        """The plan for option values given by name (the CLI's flags, a flow's parameters)."""
        names = {f.name for f in dataclasses.fields(self.options)}
        return self.plan(self.options(**{k: v for k, v in values.items() if k in names}), config)
