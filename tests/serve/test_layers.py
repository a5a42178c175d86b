"""The serving layers stay layered: the engine never imports the gateway, and jobs/ never imports serve/.

Imports are read from the source with ``ast`` (every import, including those inside functions, and
relative ones resolved), so a lazy import cannot hide a dependency and nothing has to be importable.
"""

from __future__ import annotations

import ast
from pathlib import Path

import oikyo

SRC = Path(oikyo.__file__).parent


def imported_modules(source: str, module: str) -> set[str]:
    """Every module ``source`` (the code of ``module``, dotted) imports, as absolute dotted names;
    ``from a import b`` yields ``a.b`` too, since ``b`` may be a module."""
    package = module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def violations(folder: Path, forbidden: str, root: Path = SRC.parent) -> list[str]:
    """``file: module`` for each import of ``forbidden`` (or a module inside it) by a file under
    ``folder``; ``root`` is the folder that holds the ``oikyo`` package."""
    bad = []
    for path in sorted(folder.rglob("*.py")):
        relative = path.relative_to(root).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        if path.name == "__init__.py":
            module += ".__init__"  # so a relative import resolves against the package itself
        for name in imported_modules(path.read_text(), module):
            if name == forbidden or name.startswith(forbidden + "."):
                bad.append(f"{path.relative_to(root)}: {name}")
    return bad


def test_the_engine_never_imports_the_gateway():
    assert list((SRC / "serve" / "engine").glob("*.py")), "no engine modules found: the check would pass vacuously"
    assert violations(SRC / "serve" / "engine", "oikyo.serve.gateway") == []


def test_jobs_never_import_serving():
    assert violations(SRC / "jobs", "oikyo.serve") == []


def test_the_check_sees_every_kind_of_import(tmp_path):
    module = "oikyo.serve.engine.fake"
    sources = {
        "from oikyo.serve.gateway import keys": "oikyo.serve.gateway.keys",
        "import oikyo.serve.gateway.router": "oikyo.serve.gateway.router",
        "def f():\n    from oikyo.serve.gateway.ab import choose\n": "oikyo.serve.gateway.ab",
        "from ..gateway import deployments": "oikyo.serve.gateway.deployments",
        "from .. import gateway": "oikyo.serve.gateway",
    }
    for source, expected in sources.items():
        assert expected in imported_modules(source, module), source
    assert imported_modules("from .core import GenerationEngine", module) >= {"oikyo.serve.engine.core"}

    engine = tmp_path / "oikyo" / "serve" / "engine"
    engine.mkdir(parents=True)
    (engine / "bad.py").write_text("def later():\n    from ..gateway import router\n")
    found = violations(engine, "oikyo.serve.gateway", root=tmp_path)
    assert "oikyo/serve/engine/bad.py: oikyo.serve.gateway.router" in found
    assert violations(engine, "oikyo.serve.gateway.keys", root=tmp_path) == []  # only the forbidden package counts


def test_the_loop_sits_on_top_nothing_below_imports_it():
    """oikyo.loop drives data, training, evaluation and serving; only the entry points (cli, api, web) import it."""
    assert list((SRC / "loop").glob("*.py")), "no loop modules found: the check would pass vacuously"
    below = [p for p in SRC.iterdir() if p.is_dir() and p.name not in ("loop", "cli", "api", "web", "__pycache__")]
    assert {p.name for p in below} >= {"data", "train", "jobs", "evaluate", "serve", "monitor", "store"}
    assert [v for folder in below for v in violations(folder, "oikyo.loop")] == []
