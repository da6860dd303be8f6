"""Static checks of the package layering and of the safety rules, over the real source tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("feature_schemas", "pipelines", "mmolre", "flows", "bench", "tests")
CODE = PACKAGES[:4]  # what users run: the safety rules below hold there
# The whiteboard of docs/architecture.md: package -> packages of ours it may import. Nothing imports `flows`
# but `flows` and `tests`; `bench` measures pipelines and mmolre (and runs the `mmolre` command as a whole
# command), so it imports neither `flows` nor `tests`.
ALLOWED = {
    "feature_schemas": set(),
    "pipelines": {"feature_schemas"},
    "mmolre": {"feature_schemas"},
    "flows": {"feature_schemas", "pipelines", "mmolre"},
    "bench": {"feature_schemas", "pipelines", "mmolre"},
    "tests": {"feature_schemas", "pipelines", "mmolre", "flows", "bench"},
}
# Third-party packages a layer must not reach: only `flows` orchestrates (Prefect); the store contract and the
# pipelines know no model code.
FORBIDDEN = {
    "feature_schemas": {"prefect", "prefect_dask", "torch"},
    "pipelines": {"prefect", "prefect_dask"},
    "mmolre": {"prefect", "prefect_dask"},
}


def sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (REPO / pkg).rglob("*.py"))


def imported_roots(tree: ast.AST) -> set[str]:
    """Top-level packages a module imports: import statements (also inside functions) and import_module/__import__
    calls with a literal name."""
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and dotted(node.func).split(".")[-1] in ("import_module", "__import__")
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def layering_problems(package: str, files: list[Path]) -> list[str]:
    bad = []
    for path in files:
        roots = imported_roots(ast.parse(path.read_text()))
        extra = (roots & set(PACKAGES)) - ALLOWED[package] - {package}
        extra |= roots & FORBIDDEN.get(package, set())
        if extra:
            bad.append(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path} imports {sorted(extra)}")
    return bad


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_the_layering_allows(package: str) -> None:
    assert not (bad := layering_problems(package, sources(package))), "\n".join(bad)


def test_the_layering_check_finds_what_it_forbids(tmp_path: Path) -> None:
    """The rules above catch each kind of import they forbid (so a passing check means something)."""
    cases = {
        "pipelines": ("import prefect\n", "from flows.cli import main\n", "from mmolre import train\n"),
        "mmolre": ("from pipelines.build import run_build\n", "import flows.serve\n"),
        "bench": ("from tests.media_fixtures import DATA\n",
                  "def f():\n    from flows.dask_cluster import dask_client\n",
                  "import importlib\nimportlib.import_module('flows.cli')\n"),
        "feature_schemas": ("from pipelines import inputs\n",),
    }
    for package, snippets in cases.items():
        for i, code in enumerate(snippets):
            path = tmp_path / f"{package}_{i}.py"
            path.write_text(code)
            assert layering_problems(package, [path]), (package, code)
    fine = tmp_path / "fine.py"
    fine.write_text("import numpy\nfrom feature_schemas import Store\n")
    assert layering_problems("pipelines", [fine]) == []


def calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return dotted(node.value) + "." + node.attr
    if isinstance(node, ast.Name):
        return node.id
    return "?"


def test_no_unrestricted_unpickling_and_torch_load_is_weights_only() -> None:
    problems = []
    for path in sources(*CODE):
        for call in calls(ast.parse(path.read_text())):
            name = dotted(call.func)
            rel = path.relative_to(REPO)
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "joblib.load", "np.load", "numpy.load"):
                allow_pickle = any(k.arg == "allow_pickle" and getattr(k.value, "value", None) is True for k in call.keywords)
                if name.startswith(("np.", "numpy.")) and not allow_pickle:
                    continue
                problems.append(f"{rel}:{call.lineno}: {name}")
            if name == "torch.load":
                ok = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in call.keywords)
                if not ok:
                    problems.append(f"{rel}:{call.lineno}: torch.load without weights_only=True")
    assert not problems, "\n".join(problems)


def test_no_shell_strings() -> None:
    problems = []
    for path in sources(*CODE):
        for call in calls(ast.parse(path.read_text())):
            name = dotted(call.func)
            rel = path.relative_to(REPO)
            if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
                problems.append(f"{rel}:{call.lineno}: {name}")
            if any(k.arg == "shell" and getattr(k.value, "value", None) is True for k in call.keywords):
                problems.append(f"{rel}:{call.lineno}: shell=True")
    assert not problems, "\n".join(problems)


def test_servers_we_start_bind_to_loopback() -> None:
    here = Path(__file__).resolve()
    texts = {p: p.read_text() for p in [*sources("flows"), REPO / "Makefile", *sorted((REPO / "tests").glob("*.py"))]
             if p.resolve() != here}  # this file names both strings itself
    starts = {p: t for p, t in texts.items() if re.search(r'(?<![A-Za-z])server(", "| )start', t)}  # not "forkserver start"
    assert {REPO / "flows" / "local_prefect.py", REPO / "Makefile"} <= set(starts), sorted(map(str, starts))
    for p, t in starts.items():
        assert "--host 127.0.0.1" in t or '"--host", "127.0.0.1"' in t, f"{p} starts a Prefect server not bound to 127.0.0.1"
    cluster = (REPO / "pipelines" / "dask_cluster.py").read_text()
    assert '"host": "127.0.0.1"' in cluster and '"dashboard_address": "127.0.0.1:0"' in cluster
