"""Import cycles among the modules of a package, counting every `import` / `from ... import` at any depth
(inside functions too: a lazy import still ties two modules together for a reader and for a refactor).

    python tools/import_cycles.py            # g1track/: prints each cycle, exits 1 when there is one
    python tools/import_cycles.py --edges    # also prints the module graph

A package `a.b` counts as the module `a/b/__init__.py`; `from a.b import c` counts as importing `a.b.c` when
`c` is a submodule, else `a.b`. Cycles are the strongly connected components with more than one module (or a
module importing itself), each printed with one shortest loop through it."""
import ast, sys, pathlib, argparse
from collections import deque

def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    "Dotted module name of a file below `root`'s parent (`g1track/eval/core.py` -> `g1track.eval.core`)."
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__": parts = parts[:-1]
    return ".".join(parts)

def modules_of(root: pathlib.Path) -> dict:
    "{module name: file} for every .py file of the package at `root`."
    return {module_name(p, root): p for p in sorted(root.rglob("*.py")) if ".ipynb_checkpoints" not in p.parts}

def _absolute(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    "The absolute module a `from` import names (relative imports resolved against `current`)."
    if node.level == 0: return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))

def imports_of(path: pathlib.Path, current: str, known: set) -> set:
    "The known modules that `path` imports, at any depth of its syntax tree."
    tree, out = ast.parse(path.read_text(), str(path)), set()
    is_package = path.name == "__init__.py"
    def add(name: str):
        while name and name not in known: name = name.rpartition(".")[0]   # `a.b.func` -> `a.b`
        if name: out.add(name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names: add(a.name)
        elif isinstance(node, ast.ImportFrom):
            mod = _absolute(node, current, is_package)
            for a in node.names:
                sub = f"{mod}.{a.name}" if mod else a.name
                add(sub if sub in known else mod)
    out.discard(current)  # `from . import x` inside a package resolves to x, never to the package itself
    return out

def graph(root: pathlib.Path) -> dict:
    mods = modules_of(root)
    return {m: imports_of(p, m, set(mods)) for m, p in mods.items()}

def components(g: dict) -> list:
    "Strongly connected components (Tarjan, iterative)."
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in g:
        if start in index: continue
        work = [(start, iter(sorted(g[start])))]
        index[start] = low[start] = counter[0]; counter[0] += 1; stack.append(start); on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1; stack.append(w); on.add(w)
                    work.append((w, iter(sorted(g[w])))); break
                if w in on: low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work: low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop(); on.discard(w); comp.append(w)
                        if w == v: break
                    out.append(sorted(comp))
    return out

def shortest_loop(g: dict, comp: list) -> list:
    "One shortest cycle through the component's first module (breadth-first inside the component)."
    start, inside = comp[0], set(comp)
    prev, q = {start: None}, deque([start])
    while q:
        v = q.popleft()
        for w in sorted(g[v]):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None: path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w in inside and w not in prev: prev[w] = v; q.append(w)
    return comp

def cycles(root) -> list:
    "Each import cycle of the package at `root` as a loop of module names."
    g = graph(pathlib.Path(root))
    return [shortest_loop(g, c) for c in components(g) if len(c) > 1 or c[0] in g[c[0]]]

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(pathlib.Path(__file__).resolve().parents[1] / "g1track"))
    ap.add_argument("--edges", action="store_true", help="print every module's imports too")
    a = ap.parse_args(argv)
    g = graph(pathlib.Path(a.root))
    if a.edges:
        for m in sorted(g): print(f"{m} -> {', '.join(sorted(g[m])) or '-'}")
    found = cycles(a.root)
    print(f"{len(found)} import cycle(s) among {len(g)} modules")
    for c in found: print("  " + " -> ".join(c))
    return 1 if found else 0

if __name__ == "__main__": sys.exit(main())
