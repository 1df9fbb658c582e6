"""No two runtime modules import each other, directly or round a longer circle (issue 33).

Every import counts: top-level, lazy (inside a function) and ``if TYPE_CHECKING:`` ones.
A circle that only works because one side imports lazily, or only for type hints, still
means the two modules are one unit split in two files; the shared part belongs in a
module both import downward.
"""

from __future__ import annotations

from import_graph import PACKAGE, imports_of, runtime_modules


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a
    circle of imports ``a -> b -> ... -> a`` found inside it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_circle(graph, set(c)) for c in components]


def _circle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One closed path through the component, from its first module back to it."""
    start = min(component)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                todo.append(nxt)
    raise AssertionError(f"no circle through {start}")  # a component always has one


def test_finder_names_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_runtime_has_no_import_circle() -> None:
    modules = runtime_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert sum(map(len, graph.values())) > 50, "the import walk found almost nothing"
    cycles = find_cycles(graph)
    assert not cycles, "import circles in the runtime: " + "; ".join(
        " -> ".join(m.removeprefix(PACKAGE + ".") for m in c) for c in cycles)
