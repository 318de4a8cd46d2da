"""The project's layers: imports flow one way (README, "Layout").

Every ``import`` and ``from ... import`` of every file of the project's packages, at module level
or inside a function, is read with ``ast`` and checked against what its layer may import. A
planted back-edge must fail the check, so the check can fail.
"""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("stylex_port", "models_pt", "models_tf", "porting", "attfind", "crosscheck", "cli",
           "parity_tests", "bench", "examples")
FACTS = "models_pt.release_facts"   # below everything; stylex_port.cli (and the root cli.py) is the top

# Layer -> the parts of the project it may import (besides itself). The most specific layer of a
# module wins: "attfind.selection" before "attfind".
MAY_IMPORT = {
    FACTS: set(),
    "models_pt": set(),
    "models_tf": {FACTS},
    "porting": {"models_pt", FACTS},
    "attfind.selection": set(),
    "attfind.sufficiency": set(),
    "attfind.discriminator_filter": set(),
    "attfind.backend": set(),
    "attfind.certify": set(),
    "attfind": {"models_pt", "porting", FACTS},
    "stylex_port.analyses": {"models_pt", "porting", "attfind", FACTS},
    "stylex_port.download": {"models_pt", "porting", FACTS},
    "stylex_port.training": {"models_pt", "porting", "attfind", FACTS},
    "crosscheck": {"models_pt", "models_tf", "porting", "attfind", FACTS},
}


def _layer(module: str) -> str | None:
    best = None
    for layer in MAY_IMPORT:
        if (module == layer or module.startswith(layer + ".")) and (best is None or len(layer) > len(best)):
            best = layer
    return best


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    me = _module_name(root, path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            if node.module is None or node.level:   # "from pkg import sub" may import a submodule
                out += [(node.lineno, f"{name}.{a.name}") for a in node.names]
    return out


# The AttFind core (NumPy only) imports nothing of the project but the core; the facts import nothing.
CORE = ("attfind.selection", "attfind.sufficiency", "attfind.discriminator_filter", "attfind.backend",
        "attfind.certify", FACTS)


def allowed(layer: str, other: str) -> bool:
    if other == layer:
        return True
    if layer in CORE:
        return layer.startswith("attfind.") and other in CORE and other.startswith("attfind.")
    same_layer = other.startswith(layer + ".") or layer.startswith(other + ".")   # attfind and attfind.selection
    return same_layer or any(other == m or other.startswith(m + ".") for m in MAY_IMPORT[layer])


def layer_violations(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0].startswith(".") or rel.parts[0] in ("weights", "runs", "reference", "build"):
            continue
        me = _module_name(root, path)
        layer = _layer(me)
        if layer is None:      # cli.py, the tests, the benchmarks, examples: the top, may import anything
            continue
        for line, target in imports_of(root, path):
            if target.split(".")[0] not in PROJECT:
                continue
            other = _layer(target)
            if other is None:
                found.append(f"{rel}:{line}: {me} imports {target}, which no package may import")
            elif not allowed(layer, other):
                found.append(f"{rel}:{line}: {me} ({layer}) imports {target} ({other})")
    return found


def test_imports_flow_one_way():
    assert layer_violations(ROOT) == []


def test_every_package_is_in_a_layer():
    """A new top-level package must be given a layer (or be one of the top's folders)."""
    tops = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    tops |= {p.stem for p in ROOT.glob("*.py")}
    assert tops - set(PROJECT) == set(), "add the new part of the project to PROJECT and MAY_IMPORT"


def test_a_planted_back_edge_fails(tmp_path):
    """Copies of the project's sources with back-edges planted: the check must name each one."""
    for part in ("stylex_port", "models_pt", "models_tf", "porting", "attfind", "crosscheck"):
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, tmp_path / part)
    assert layer_violations(tmp_path) == []
    planted = {
        "models_pt/generator.py": "from porting.kinds import KINDS\n",              # bottom -> porting
        "porting/mapping.py": "    from models_tf import generator\n",              # porting -> TF side
        "models_tf/ops.py": "import attfind.selection\n",                             # TF side -> attfind
        "attfind/selection.py": "from models_pt.stylespace import StyleSpace\n",      # the core -> anything
        "attfind/sufficiency.py": "import attfind.run\n",                              # the core -> attfind's tool
        "attfind/run.py": "from stylex_port.analyses import wu\n",                     # attfind -> the analyses
        "stylex_port/download.py": "from stylex_port.analyses import wu\n",           # the downloader -> the analyses
        "stylex_port/analyses/wu.py": "from stylex_port import cli\n",                # a layer -> the top
        "models_pt/release_facts.py": "import porting\n",                           # the facts -> anything
        "porting/readers.py": "from stylex_port import cli\n",                        # a layer -> the top
    }
    for rel, line in planted.items():
        path = tmp_path / rel
        text = path.read_text()
        if line.startswith("    "):   # inside a function: hidden imports count too
            text += "\n\ndef _planted():\n" + line
        else:
            text += "\n" + line
        path.write_text(text)
    found = layer_violations(tmp_path)
    for rel in planted:
        assert any(f.startswith(rel + ":") for f in found), (rel, found)
    assert len(found) == len(planted), found


# ----------------------------------------------------------------- no circles

def module_graph(root: Path) -> dict[str, set]:
    """module -> the project modules it imports (at module level or inside a function), for every
    module of the project's packages; ``from pkg import sub`` counts as importing ``pkg.sub``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] not in PROJECT[:6] or len(rel.parts) == 1:   # the packages, not cli.py or the tests
            continue
        modules[_module_name(root, path)] = path
    graph = {}
    for me, path in modules.items():
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (".".join(package.split(".")[: len(package.split(".")) - node.level + 1] +
                                 ([node.module] if node.module else [])) if node.level else node.module or "")
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in modules:      # a name inside a module: the module
                    name = name.rpartition(".")[0]
                if name and name != me:
                    edges.add(name)
        graph[me] = edges
    return graph


def circles(graph: dict[str, set]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_two_modules_import_each_other():
    """No circle of imports among the project's modules, however long, function-level imports
    included: a circle makes two modules one, whichever layer they sit in."""
    assert circles(module_graph(ROOT)) == []


def test_a_planted_circle_fails(tmp_path):
    for part in PROJECT[:6]:
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    assert circles(module_graph(tmp_path)) == []
    path = tmp_path / "porting" / "mapping.py"
    path.write_text(path.read_text() + "\n\ndef _planted():\n    from porting import convert\n")
    assert any({"porting.mapping", "porting.convert"} <= set(c) for c in circles(module_graph(tmp_path)))
