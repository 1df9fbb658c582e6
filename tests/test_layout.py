"""The README's "Layout of the code" names every module, and the runtime holds only its own."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from import_graph import imports_of, runtime_modules

REPO = Path(__file__).resolve().parents[1]
#: Folders whose modules the layout names one by one.
NAMED = ("runtime", "runtime/core", "runtime/imaging", "runtime/engine", "runtime/synthesis",
         "runtime/bids", "runtime/registration", "runtime/qc", "data", "data/simulate", "train",
         "starters", "benchmarks/registration")
#: The runtime's entry points: every runtime module must serve one of them.
RUNTIME_ENTRIES = ("mri2mri.runtime.synthesis.cli_run", "mri2mri.runtime.registration.cli")


def _layout_block() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Layout of the code", 1)[1]
    return section.split("```", 2)[1]


def test_readme_layout_matches_the_tree() -> None:
    block = _layout_block()
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", block))
    folders = set(re.findall(r"^\s*([\w/-]+/)", block, flags=re.MULTILINE))
    for folder in ("runtime/", "core/", "imaging/", "engine/", "synthesis/", "bids/", "qc/",
                   "registration/", "data/", "simulate/", "ixi/", "train/", "export/", "demo/",
                   "benchmarks/",
                   "perf/", "tests/"):
        assert folder in folders, f"{folder} missing from the README layout"
    for package in NAMED:
        for module in sorted((REPO / package).glob("*.py")):
            if module.stem != "__init__":
                assert module.stem in words, f"{package}/{module.name} missing from the layout"
    for folder in (*NAMED, "data/ixi", "export", "demo", "benchmarks/perf",
                   "tests/benchmarks", "tests/data/ixi-dti-crop"):
        assert (REPO / folder).is_dir(), f"the layout names {folder}, which does not exist"


def test_every_runtime_module_serves_a_runtime_command() -> None:
    """The base install holds no module that only training or the benchmarks use."""
    modules = runtime_modules()
    seen: set[str] = set()
    todo = list(RUNTIME_ENTRIES)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(3, len(parts))]  # parent packages
        todo += sorted(imports_of(name, modules[name], modules) - seen)
    unused = sorted(set(modules) - seen)
    assert not unused, f"runtime modules no runtime command uses: {unused}"


#: Product code stays readable in pieces: no function longer than this (issue 22).
MAX_FUNCTION_LINES = 80


def test_no_product_function_is_longer_than_the_limit() -> None:
    long = []
    for folder in ("runtime", "train", "export", "demo", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            if "perf" in path.relative_to(REPO).parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(REPO)}:{node.name} ({lines} lines)")
    assert not long, f"functions longer than {MAX_FUNCTION_LINES} lines: {long}"


#: Product modules stay readable as a whole too: no module longer than this (issue 33).
MAX_MODULE_LINES = 600


def test_no_product_module_is_longer_than_the_limit() -> None:
    long = []
    for folder in ("runtime", "data", "train", "export", "demo", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            if "perf" in path.relative_to(REPO).parts:
                continue
            lines = len(path.read_text().splitlines())
            if lines > MAX_MODULE_LINES:
                long.append(f"{path.relative_to(REPO)} ({lines} lines)")
    assert not long, f"modules longer than {MAX_MODULE_LINES} lines: {long}"


#: Callers name what they pass: no product function takes more than this many parameters
#: positionally (self/cls not counted); the rest are keyword-only, after `*` (issue 33).
MAX_POSITIONAL = 4
#: "path:function" of functions whose signature a library fixes (a subclass method that
#: DIPY or torch calls positionally), exempt from `MAX_POSITIONAL`. None needs it today.
POSITIONAL_ALLOWED: frozenset[str] = frozenset()


def test_no_product_function_takes_more_than_four_positional_parameters() -> None:
    wide = []
    for folder in ("runtime", "data", "train", "export", "demo", "benchmarks", "starters"):
        for path in (REPO / folder).rglob("*.py"):
            if "perf" in path.relative_to(REPO).parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    named = [a.arg for a in node.args.posonlyargs + node.args.args
                             if a.arg not in ("self", "cls")]
                    where = f"{path.relative_to(REPO)}:{node.name}"
                    if len(named) > MAX_POSITIONAL and where not in POSITIONAL_ALLOWED:
                        wide.append(f"{where} ({len(named)} positional)")
    assert not wide, (f"functions taking more than {MAX_POSITIONAL} parameters positionally "
                      f"(make the rest keyword-only with `*,`): {wide}")


#: The rooms from the bottom up: each may import only itself and the rooms before it.
ROOMS = ("runtime", "data", "train", "export")


def _imported_modules(path: Path) -> set[str]:
    """Every absolute mri2mri module named in `path`'s imports, lazy ones included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
    return {m for m in found if m.startswith("mri2mri.")}


def test_no_room_imports_a_room_above_it() -> None:
    """runtime <- data <- train <- export: never crossed upward, not even lazily."""
    upward = []
    for rank, room in enumerate(ROOMS):
        above = ROOMS[rank + 1:] + ("demo", "benchmarks")
        for path in (REPO / room).rglob("*.py"):
            for module in _imported_modules(path):
                if module.split(".")[1] in above:
                    upward.append(f"{path.relative_to(REPO)} imports {module}")
    assert not upward, f"imports that cross a layer upward: {upward}"
