"""The house's layering, checked on the source: only engine/ imports Lightning; no method imports another method."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "frugalvision"


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_only_the_engine_imports_lightning(path):
    if path.relative_to(SRC).parts[0] == "engine":
        return
    offenders = [name for name in _imports(path) if name.split(".")[0] in {"lightning", "pytorch_lightning"}]
    assert not offenders, f"{path.relative_to(SRC)} imports {offenders}; go through frugalvision.engine"


@pytest.mark.parametrize(
    "path",
    [p for p in FILES if p.relative_to(SRC).parts[0] == "methods" and len(p.relative_to(SRC).parts) > 2],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_no_method_imports_another_method(path):
    own = path.relative_to(SRC).parts[1]
    others = [name for name in _imports(path) if name.startswith("frugalvision.methods.") and name.split(".")[2] != own]
    assert not others, f"{path.relative_to(SRC)} imports {others}; move the shared piece to nn/, data/ or metrics/"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_shared_layers_never_import_methods_or_the_harness(path):
    layer = path.relative_to(SRC).parts[0]
    if layer not in {"engine", "nn", "data", "metrics", "report"}:
        return
    bad = [n for n in _imports(path) if n.startswith(("frugalvision.methods", "frugalvision.harness"))]
    assert not bad, f"{path.relative_to(SRC)} imports {bad}; shared layers sit below the harness and the methods"
