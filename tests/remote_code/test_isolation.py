"""The matrix venv is hermetic: the isolation check (isolation.py, which ends every matrix suite run) flags what
it must, and what this venv can import is its own. Runs only in the matrix (see conftest.py)."""

from __future__ import annotations

import importlib.metadata
import os
import site
import sys
import sysconfig
import types
from pathlib import Path

import isolation


BASE_SITE = Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["purelib"])
SHARED = [Path(p) for p in os.environ.get("DIFFCLIP_ISOLATION_ALLOW", "").split(os.pathsep) if p]


def fake_module(name, file):
    module = types.ModuleType(name)
    module.__file__ = str(file)
    return module


def test_runs_in_a_venv_without_the_base_site_packages():
    assert sys.prefix != sys.base_prefix, "not a virtual environment"
    assert not site.ENABLE_USER_SITE, "the user site-packages are enabled"
    on_path = [Path(os.path.realpath(p)) for p in sys.path if p]
    assert Path(os.path.realpath(BASE_SITE)) not in on_path
    assert Path(os.path.realpath(sys.prefix)) in [p.parents[2] for p in on_path if len(p.parents) > 2]


def test_check_flags_a_module_from_the_base_site_packages():
    found = isolation.outside({"leaked": fake_module("leaked", BASE_SITE / "leaked" / "__init__.py")}, [])
    assert found == [f"leaked: {BASE_SITE / 'leaked' / '__init__.py'}"]


def test_check_flags_a_module_and_a_path_entry_from_another_environment(tmp_path):
    other = tmp_path / "other-venv" / "lib" / "site-packages"
    other.mkdir(parents=True)
    found = isolation.outside({"kernels": fake_module("kernels", other / "kernels" / "__init__.py")}, [str(other)])
    assert found == [f"kernels: {other / 'kernels' / '__init__.py'}", f"sys.path: {other}"]


def test_check_accepts_the_standard_library_and_this_venv():
    import json as stdlib_module

    import pytest as venv_module

    modules = {"json": stdlib_module, "pytest": venv_module, "blocked": None, "builtin": sys}
    assert isolation.outside(modules, []) == []


def test_every_installed_distribution_is_this_venvs_or_the_shared_torch():
    roots = [Path(os.path.realpath(sys.prefix)), *(Path(os.path.realpath(p)) for p in SHARED)]
    foreign = []
    for dist in importlib.metadata.distributions():
        location = Path(os.path.realpath(dist.locate_file("")))
        if not any(location.is_relative_to(root) for root in roots):
            foreign.append(f"{dist.metadata['Name']} {dist.version}: {location}")
    assert foreign == []
    names = {dist.metadata["Name"].lower() for dist in importlib.metadata.distributions()}
    assert "transformers-diffclip" not in names and "transformers_diffclip" not in names


def test_torch_comes_from_the_shared_install_and_transformers_from_the_venv():
    import torch
    import transformers

    assert Path(os.path.realpath(transformers.__file__)).is_relative_to(os.path.realpath(sys.prefix))
    torch_file = Path(os.path.realpath(torch.__file__))
    assert any(torch_file.is_relative_to(os.path.realpath(p)) for p in [sys.prefix, *SHARED])


def test_a_module_compiled_from_a_string_has_no_location_but_a_file_outside_is_flagged(tmp_path):
    """torch's CUDA builds compile their RPC remote module from a string (`<_remote_module_non_scriptable>.py`):
    nothing was read from disk, so it has no location; a real file of that name elsewhere is still flagged."""
    generated = fake_module("_remote_module_non_scriptable", "<_remote_module_non_scriptable>.py")
    assert isolation.module_locations(generated) == []
    real = fake_module("leaked", BASE_SITE / "<leaked>.py")
    assert isolation.outside({"leaked": real}, []) == [f"leaked: {BASE_SITE / '<leaked>.py'}"]
