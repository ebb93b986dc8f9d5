"""`python build/deps.py [--modules]`: the inspector package's imports, one line per layer (a
subpackage core/, app/, ... or a top-level module) or per module, and any cycle (exit 1).
Imports inside functions count: a lazy import is still a dependency."""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "inspector"


def module_name(path):
    parts = ("inspector",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path, name):
    """Every dotted name the file imports: `from .a import b` gives both inspector...a and ...a.b."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)


def layer(module):  # inspector.core.model -> core/, inspector.cli -> cli
    parts = module.split(".")
    return "inspector" if len(parts) == 1 else parts[1] + "/" * (ROOT / parts[1]).is_dir()


def graph(collapse):
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        key = collapse(name)
        targets = {collapse(t) for t in imports(path, name) if t in modules}
        edges.setdefault(key, set()).update(targets - {key})
    return edges


def cycles(edges):
    """One cycle per back edge of a depth-first search (none found: there is none)."""
    found, state = [], {}

    def visit(stack):
        state[stack[-1]] = "open"
        for nxt in sorted(edges.get(stack[-1], ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(stack + [nxt])
        state[stack[-1]] = "done"

    for node in sorted(edges):
        if node not in state:
            visit([node])
    return found


if __name__ == "__main__":
    edges = graph((lambda m: m) if "--modules" in sys.argv else layer)
    for node in sorted(edges):
        print(f"{node} -> {', '.join(sorted(edges[node])) or '(nothing)'}")
    loops = cycles(edges)
    print("\n".join("cycle: " + " -> ".join(c) for c in loops) or "no cycle")
    sys.exit(1 if loops else 0)
