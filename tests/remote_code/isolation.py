"""Isolation of a version-matrix venv: every imported module comes from that venv, the base interpreter's standard
library, the shared torch install, or the code under test -- never from the parent environment.

Used as a pytest plugin by the matrix (`python -m pytest -p isolation ...`, with this folder on PYTHONPATH; see
.ci/matrix.py): when the session ends, after the suite imported everything it needs, the plugin checks
`sys.modules` and `sys.path`, writes a JSON report to $DIFFCLIP_ISOLATION_REPORT and fails the run (exit status 1)
on any module from elsewhere. Allowed besides the venv and the standard library: the checkout's tests/ and conversion/
folders (the code under test: conversion/reference_original.py is the tests' reference of the original model) and
the folders named in $DIFFCLIP_ISOLATION_ALLOW (the shared torch install, the fixture folders, the remote-code
module cache, the fetched transformers tests), which the matrix sets.
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
from pathlib import Path


TESTS_DIR = Path(__file__).resolve().parents[1]
CONVERSION_DIR = TESTS_DIR.parent / "conversion"  # the reference of the original forward (tests/conftest.py)


def _resolved(path) -> Path:
    return Path(os.path.realpath(path))


def allowed_roots() -> tuple[list[Path], list[Path]]:
    """(allowed folders, folders excluded from them): the venv, the base standard library without its
    site-packages, tests/, conversion/, and $DIFFCLIP_ISOLATION_ALLOW."""
    stdlib = {_resolved(sysconfig.get_paths()[key]) for key in ("stdlib", "platstdlib")}
    allowed = [_resolved(sys.prefix), *stdlib, TESTS_DIR, CONVERSION_DIR]
    allowed += [_resolved(p) for p in os.environ.get("DIFFCLIP_ISOLATION_ALLOW", "").split(os.pathsep) if p]
    # the base interpreter's own site-packages live inside its standard library folder
    excluded = [folder / name for folder in stdlib for name in ("site-packages", "dist-packages")]
    return allowed, excluded


def is_inside(path, allowed: list[Path], excluded: list[Path]) -> bool:
    path = _resolved(path)
    in_venv = _resolved(sys.prefix)
    if any(path.is_relative_to(root) for root in excluded) and not path.is_relative_to(in_venv):
        return False
    return any(path.is_relative_to(root) for root in allowed)


def module_locations(module, modules=None) -> list[str]:
    """The files / folders a module was loaded from (none for built-in and frozen modules). A module object that
    torch builds at run time names a bare file (`torch.ops`: `_ops.py`); it is located by its top package."""
    locations = []
    file = getattr(module, "__file__", None)
    if file and file.startswith("<") and not os.path.exists(file):
        # compiled from a string by the package that made it (torch's RPC remote-module template on the CUDA
        # builds: `<_remote_module_non_scriptable>.py`): nothing was read from disk, and that package was checked
        return []
    if file and not os.path.isabs(file):
        top = (sys.modules if modules is None else modules).get(module.__name__.partition(".")[0])
        if top is not None and top is not module:
            return module_locations(top, modules)
        return [file]
    if file:
        locations.append(file)
    elif getattr(module, "__path__", None) is not None:  # namespace packages
        locations += [p for p in module.__path__ if isinstance(p, str)]
    return locations


def outside(modules=None, path_entries=None) -> list[str]:
    """`module: location` for each module (and `sys.path: entry` for each path entry) outside the allowed roots."""
    allowed, excluded = allowed_roots()
    modules = dict(sys.modules if modules is None else modules)
    found = []
    for name, module in sorted(modules.items()):
        if module is None:  # blocked imports (the remote-code suite blocks transformers_diffclip)
            continue
        for location in module_locations(module, modules):
            if not is_inside(location, allowed, excluded):
                found.append(f"{name}: {location}")
    for entry in sys.path if path_entries is None else path_entries:
        if entry and os.path.exists(entry) and not is_inside(entry, allowed, excluded):
            # the checkout root (pytest's rootdir, `python -m`'s cwd) is on sys.path; only tests/ is imported
            # from it, which the module check above proves
            if _resolved(entry) != TESTS_DIR.parent:
                found.append(f"sys.path: {entry}")
    return found


def check() -> dict:
    problems = outside()
    if sys.prefix == sys.base_prefix:
        problems.append(f"sys.prefix: {sys.prefix} is the base interpreter, not a virtual environment")
    if "transformers_diffclip" in sys.modules and sys.modules["transformers_diffclip"] is not None:
        problems.append("transformers_diffclip was imported (it must not exist in a matrix venv)")
    return {"venv": sys.prefix, "modules": len(sys.modules), "outside": problems}


def pytest_sessionfinish(session, exitstatus):
    report = check()
    target = os.environ.get("DIFFCLIP_ISOLATION_REPORT")
    if target:
        Path(target).write_text(json.dumps(report, indent=1))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if report["outside"]:
        if reporter is not None:
            reporter.write_line(f"ISOLATION FAILED: {len(report['outside'])} imports from outside {sys.prefix}:")
            for line in report["outside"][:50]:
                reporter.write_line(f"  {line}")
        session.exitstatus = 1
    elif reporter is not None:
        reporter.write_line(f"isolation: {report['modules']} modules, all from {sys.prefix}, the standard library, "
                            "the shared torch or the code under test")  # fmt: skip
