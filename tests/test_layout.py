"""The package's modules form layers: each imports only the layers below it.

A base module imports nothing built on it, saving and loading are a layer on
top, and no import hides inside a function body to dodge a cycle.
"""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import skvae

PACKAGE = Path(skvae.__file__).parent
# Bottom to top. A module may import modules of lower layers only.
LAYERS = [
    {"_version", "_device", "_likelihood", "_mixture", "_incomplete"},
    {"_model"},
    {"_training"},
    {"_units", "_linear_start"},
    {"_inference"},
    {"_base"},
    {"_estimator", "_imputer", "_outlier"},
    {"_persistence"},
    {"__init__", "__main__"},
]
LAYER = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _package_imports(tree):
    """(module imported, node) for every relative import in the tree."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [a.name for a in node.names]
            yield from ((name.split(".")[0], node) for name in names)
        elif isinstance(node, ast.ImportFrom) and node.module == "skvae":
            yield from ((a.name, node) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "skvae."
        ):
            yield node.module.split(".")[1], node


def test_every_module_has_a_layer():
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    assert modules == set(LAYER)


@pytest.mark.parametrize("module", sorted(LAYER))
def test_imports_point_down(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    for imported, _ in _package_imports(tree):
        if imported in LAYER and module != "__main__":
            assert LAYER[imported] < LAYER[module], (
                f"skvae.{module} imports skvae.{imported}, which is not below it"
            )


@pytest.mark.parametrize("module", sorted(set(LAYER) - {"__init__", "__main__"}))
def test_no_import_of_the_package_inside_a_function(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    top_level = {id(node) for node in tree.body}
    for imported, node in _package_imports(tree):
        assert id(node) in top_level, (
            f"skvae.{module} imports {imported} inside a function (line "
            f"{node.lineno}): a hidden import cycle"
        )


@pytest.fixture
def fresh_skvae():
    """sys.modules without skvae's modules for the test, restored afterwards.

    Importing a submodule then runs the package's imports from scratch, in
    the order that submodule's import causes, as in a fresh interpreter
    (torch and scikit-learn stay loaded, which only saves time).
    """
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "skvae"}
    for name in saved:
        del sys.modules[name]
    yield
    for name in [k for k in sys.modules if k.split(".")[0] == "skvae"]:
        del sys.modules[name]
    sys.modules.update(saved)


@pytest.mark.parametrize("module", sorted(set(LAYER) - {"__init__", "__main__"}))
def test_each_module_imports_first(module, fresh_skvae):
    """Importing any one submodule first must work: an import cycle breaks it."""
    imported = importlib.import_module(f"skvae.{module}")
    assert imported.__name__ == f"skvae.{module}"


def test_the_package_imports_in_a_fresh_interpreter():
    subprocess.run(
        [sys.executable, "-c", "import skvae._base, skvae"], check=True, timeout=120
    )
