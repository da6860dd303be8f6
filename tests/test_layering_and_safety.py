"""Static checks of the package layering and of the safety rules, over the real source tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("feature_schemas", "pipelines", "mmolre", "flows")
ALLOWED = {  # package -> packages of ours it may import
    "feature_schemas": set(),
    "pipelines": {"feature_schemas"},
    "mmolre": {"feature_schemas"},
    "flows": {"feature_schemas", "pipelines", "mmolre"},
}


def sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (REPO / pkg).rglob("*.py"))


def imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_the_layering_allows(package: str) -> None:
    bad = []
    for path in sources(package):
        ours = imported_roots(ast.parse(path.read_text())) & set(PACKAGES)
        extra = ours - ALLOWED[package] - {package}
        if extra:
            bad.append(f"{path.relative_to(REPO)} imports {sorted(extra)}")
    assert not bad, "\n".join(bad)


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
    for path in sources(*PACKAGES):
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
    for path in sources(*PACKAGES):
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
    cluster = (REPO / "flows" / "dask_cluster.py").read_text()
    assert '"host": "127.0.0.1"' in cluster and '"dashboard_address": "127.0.0.1:0"' in cluster
