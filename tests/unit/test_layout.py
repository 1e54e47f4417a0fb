"""The layout's rules, read from the source: what each package may import (its docstring says
the same) and that the runtime never needs the dev tools."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_DIRS = ("worker", "tasks", "config")


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from worker import cache` is worker.cache; `from a.b import f` is a.b.f.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules(folder: str) -> list[Path]:
    """The package's modules (a module alone when `folder` is one)."""
    path = ROOT / folder
    return [path] if path.is_file() else sorted(path.rglob("*.py"))


def ours(imported: set[str]) -> set[str]:
    return {m for m in imported if m.split(".")[0] in ("worker", "tasks", "config", "devtools")}


@pytest.mark.parametrize("folder", RUNTIME_DIRS)
def test_the_runtime_never_imports_dev_tools_or_tests(folder: str) -> None:
    for path in modules(folder):
        bad = {m for m in imports_of(path) if m.split(".")[0] in ("devtools", "tests", "bench")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


# Every package of the house, from the ground up, and what it may import (its docstring says
# the same). Each may import only packages listed before it: no arrow points upward.
PACKAGES = (
    ("config", ("config",)),
    ("worker/domain", ("worker.domain",)),
    ("worker/support", ("worker.domain", "worker.support")),
    ("worker/cache.py", ("worker.domain", "worker.support", "worker.cache")),
    ("worker/store", ("worker.domain", "worker.support", "worker.store")),
    ("worker/runtime", ("config", "worker.domain", "worker.support", "worker.store",
                        "worker.runtime")),
    ("worker/jira", ("config", "worker.domain", "worker.support", "worker.store", "worker.jira",
                     "worker.cache", "worker.runtime.resources")),
    ("worker/services", ("worker.domain", "worker.support", "worker.store", "worker.cache",
                         "worker.runtime", "worker.services")),
    ("tasks", ("config", "worker.domain", "worker.support", "worker.store", "worker.cache",
               "worker.runtime", "worker.jira", "worker.services", "tasks")),
    ("worker/receiver", ("config", "worker.domain", "worker.support", "worker.cache",
                         "worker.store", "worker.runtime", "worker.receiver",
                         "worker.jira.linking", "worker.jira.consent", "tasks.relay")),
    ("worker/cli", ("config", "worker.domain", "worker.support", "worker.store", "worker.cache",
                    "worker.runtime", "worker.jira", "worker.services", "worker.cli",
                    "tasks.pipeline", "tasks.relay")),
)  # fmt: skip


@pytest.mark.parametrize(("package", "allowed"), PACKAGES)
def test_each_package_imports_only_what_its_docstring_allows(
    package: str, allowed: tuple[str, ...]
) -> None:
    for path in modules(package):
        for module in ours(imports_of(path)):
            assert any(module == a or module.startswith(a + ".") for a in allowed), (
                f"{path.relative_to(ROOT)} imports {module}"
            )


def test_worker_top_level_holds_only_packages_and_small_entry_points() -> None:
    loose = sorted(p.name for p in (ROOT / "worker").glob("*.py"))
    assert loose == ["__init__.py", "cache.py"]


def test_every_package_says_what_it_holds() -> None:
    for init in (ROOT / "worker").rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init.relative_to(ROOT)} has no docstring"


def test_every_package_of_the_house_is_covered() -> None:
    covered = {package for package, _ in PACKAGES}
    packages = {
        str(init.parent.relative_to(ROOT))
        for folder in RUNTIME_DIRS
        for init in (ROOT / folder).rglob("__init__.py")
        if init.parent.parent.name != "store"  # store/queries is part of store
    }
    assert packages <= covered | {"worker"}, sorted(packages - covered)


def owner(module: str) -> str:
    """The package of PACKAGES that holds a dotted module name."""
    path = module.replace(".", "/")
    holders = [p for p, _ in PACKAGES if path == p.removesuffix(".py") or path.startswith(p + "/")]
    return max(holders, key=len)


def test_no_package_may_import_one_above_it() -> None:
    order = [package for package, _ in PACKAGES]
    for rank, (package, allowed) in enumerate(PACKAGES):
        for module in allowed:
            assert order.index(owner(module)) <= rank, f"{package} may import {module} above it"
