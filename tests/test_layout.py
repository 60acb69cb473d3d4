"""Where code lives: model/ and training/ import without Streamlit or Plotly, results and the
model card load without TensorFlow, and imports point one way (pages -> ui -> model, training)
with no cycle."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("model", "training", "ui")


def _modules(package: str) -> list[str]:
    return sorted(f"{package}.{p.stem}" for p in (ROOT / package).glob("*.py") if p.stem != "__init__")


def _imported_after(modules: list[str]) -> set[str]:
    """Top-level package names in sys.modules after importing ``modules`` in a fresh interpreter."""
    code = ("import importlib, json, sys\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.slow  # importing training.train loads TensorFlow
def test_model_and_training_import_without_streamlit_or_plotly():
    loaded = _imported_after(_modules("model") + _modules("training"))
    assert "tensorflow" in loaded  # the import did reach the heavy modules
    assert not {"streamlit", "plotly", "ui"} & loaded


def test_results_card_drawing_and_the_app_logic_load_without_tensorflow():
    loaded = _imported_after(["model.results", "model.card", "model.heatmap_draw", "model.analyzer",
                              "ui.photos", "ui.charts", "ui.dataset_charts", "training.explorer"])
    assert {"plotly", "numpy"} <= loaded  # ui.charts was imported
    assert not {"tensorflow", "keras", "mtcnn"} & loaded


def _import_graph() -> dict[str, set[str]]:
    """Module -> project modules it imports at any level (``from model import x`` counts x if it is a module)."""
    known = {m for package in PACKAGES for m in _modules(package)}
    graph: dict[str, set[str]] = {}
    for name in known:
        tree = ast.parse((ROOT / (name.replace(".", "/") + ".py")).read_text())
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def test_imports_point_one_way_without_cycles():
    graph = _import_graph()
    for name, targets in graph.items():
        if not name.startswith("ui."):
            assert not any(t.startswith("ui.") for t in targets), f"{name} imports the UI: {targets}"
    assert "model.gradcam" in graph["model.analyzer"] and "model.analyzer" not in graph["model.gradcam"]
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            assert state.get(target) != 1, "import cycle: " + " -> ".join([*path, node, target])
            if target not in state:
                visit(target, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_pages_reach_the_library_only_through_ui():
    for page in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        tree = ast.parse(page.read_text())
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(m == "training" or m.startswith("training.") for m in modules), page.name
