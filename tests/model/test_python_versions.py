"""The model files are remote code: they must import on every Python that `pyproject.toml` declares (3.10 and newer).

CI imports them on each interpreter this machine ships (.ci/interpreters.py); this test, in the main environment,
imports the modeling file as Python 3.10 would see it: a `typing` without `Unpack` (added in 3.11) and a
`sys.version_info` of 3.10."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import typing
from pathlib import Path

import pytest

import transformers_diffclip


PACKAGE = Path(transformers_diffclip.__file__).parent
MODEL_FILES = ("configuration_diffclip", "modeling_diffclip", "image_processing_diffclip", "processing_diffclip")
# names the standard library gained after Python 3.10, which a model file must not import unguarded
NEWER_THAN_310 = {
    "typing": {"Self", "Unpack", "LiteralString", "Never", "NotRequired", "Required", "TypeVarTuple", "assert_never",
               "assert_type", "reveal_type", "dataclass_transform", "override", "TypeAliasType", "ReadOnly"},
    "datetime": {"UTC"},
    "enum": {"StrEnum", "verify", "ReprEnum"},
}  # fmt: skip
NEWER_MODULES = {"tomllib", "wsgiref.types"}


def test_modeling_imports_as_python_3_10_sees_it(monkeypatch):
    monkeypatch.setattr(sys, "version_info", (3, 10, 13, "final", 0))
    monkeypatch.delattr(typing, "Unpack", raising=False)
    name = "transformers_diffclip._modeling_as_py310"
    spec = importlib.util.spec_from_file_location(name, PACKAGE / "modeling_diffclip.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    assert module.DiffCLIPModel.__name__ == "DiffCLIPModel"
    assert module.Unpack.__module__ == "typing_extensions"


@pytest.mark.parametrize("stem", MODEL_FILES)
def test_model_files_import_nothing_newer_than_python_3_10_unguarded(stem):
    """Outside an `if sys.version_info >= ...` block, no model file imports a name Python 3.10 lacks."""
    tree = ast.parse((PACKAGE / f"{stem}.py").read_text(encoding="utf-8"))
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "version_info" in ast.unparse(node.test):
            guarded |= {id(child) for child in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.ImportFrom) and node.module in NEWER_THAN_310:
            found += [f"{node.module}.{a.name}" for a in node.names if a.name in NEWER_THAN_310[node.module]]
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [m for m in modules if m in NEWER_MODULES]
    assert found == []
    assert not re.search(r"except\s*\*", (PACKAGE / f"{stem}.py").read_text(encoding="utf-8"))
