"""Every method README's public-API example runs as written (the code block after ``<!-- example: tested -->``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from frugalvision.registry import METHODS

METHODS_DIR = Path(__file__).resolve().parents[1] / "src" / "frugalvision" / "methods"
MARKER = "<!-- example: tested -->"
EXAMPLE = re.compile(re.escape(MARKER) + r"\s*```python\n(.*?)```", re.DOTALL)
PAPER_METHODS = [m for m, info in METHODS.items() if info.kind == "paper" and info.status == "available"]


def examples(method: str) -> list[str]:
    """The tested examples of one method's README."""
    readme = METHODS_DIR / method / "README.md"
    return EXAMPLE.findall(readme.read_text(encoding="utf-8")) if readme.is_file() else []


@pytest.mark.parametrize("method", PAPER_METHODS)
def test_the_readme_example_runs(method, tmp_path, monkeypatch):
    blocks = examples(method)
    assert blocks, f"methods/{method}/README.md has no python block after {MARKER}"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, f"{method}/README.md", "exec"), {"__name__": f"readme_{method}"})
