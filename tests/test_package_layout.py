"""The layout of the rrm package: every module imports, no import circle, each layer
imports only from the layers below it, no library module imports a command line, and each
shared helper has one definition."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "rrm"
ENTRY_POINTS = {"rrm.train", "rrm.infer", "rrm.evaluate", "rrm.pseudo_labels", "rrm.data.check", "rrm.data.synthetic",
                "rrm.models.mxnet_params"}
# Lower layers never import higher ones; the command lines sit on top.
LAYERS = ("rrm.utils", "rrm.data", "rrm.models", "rrm.cams", "rrm.evaluation", "rrm.training")
SHARED_HELPERS = ("resolve_device", "write_atomic", "run_command", "report_error", "parse_scales",
                  "read_torch_file", "check_state_dict_fits", "check_same_size", "image_list_path")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def imported_modules(name: str) -> set[str]:
    """The rrm modules ``name`` imports anywhere in its code (also inside functions): the
    module each import statement names, or the submodule a ``from`` import names."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imported_modules(name) for name in MODULES}


def layer(name: str) -> int:
    """The index of ``name``'s layer in :data:`LAYERS`; ``len(LAYERS)`` for the command lines."""
    if name in ENTRY_POINTS:
        return len(LAYERS)
    for index, prefix in enumerate(LAYERS):
        if name == prefix or name.startswith(prefix + "."):
            return index
    raise AssertionError(f"{name} belongs to no layer; add it to LAYERS")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_no_import_circle():
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def test_the_graph_sees_imports():
    assert "rrm.training.runner" in GRAPH["rrm.train"]
    assert "rrm.utils.errors" in GRAPH["rrm.data.layout"]


@pytest.mark.parametrize("name", sorted(set(MODULES) - {"rrm"}))
def test_imports_go_down_the_layers(name):
    for target in GRAPH[name]:
        if target != "rrm":
            assert target not in ENTRY_POINTS, f"{name} imports the command line {target}"
            assert layer(target) <= layer(name), f"{name} imports {target}, which is in a higher layer"


@pytest.mark.parametrize("helper", SHARED_HELPERS)
def test_each_shared_helper_has_one_definition(helper):
    definitions = [
        name for name, path in MODULES.items() for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == helper
    ]
    assert len(definitions) == 1, definitions
