"""transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`), fetched from the installed release's
source distribution on the package index at test time, never committed.

The sdist holds `tests/test_modeling_common.py`, `tests/test_configuration_common.py` and their siblings, but not
the three helper modules they import from sub-folders (`exporters/test_export.py`, `generation/test_utils.py`,
`utils/test_configuration_utils.py`); those are stood in for by the smallest definitions that keep their meaning
(no export tests, no generation tests, a few general config arguments) when the folder lacks them.

The files are unpacked once per transformers version into a cache outside the checkout
(`$DIFFCLIP_TRANSFORMERS_TESTS_CACHE`, default `~/.cache/transformers-diffclip/transformers-tests/<version>/tests`)
and imported as the package `_transformers_upstream_tests`, so that they never clash with this project's `tests`.

    python tests/_transformers_tests.py        # fetch for the installed transformers (CI does this first)
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path


PACKAGE = "_transformers_upstream_tests"
REQUIRED = ("test_modeling_common.py", "test_configuration_common.py")


class FetchError(RuntimeError):
    """transformers' test files could not be fetched (no index, no sdist for this version, no tests in it)."""


def cache_root() -> Path:
    default = Path.home() / ".cache" / "transformers-diffclip" / "transformers-tests"
    return Path(os.environ.get("DIFFCLIP_TRANSFORMERS_TESTS_CACHE", default))


def fetch(version: str | None = None) -> Path:
    """The `tests/` folder of transformers `version` (default: the installed one), fetched once and cached."""
    if version is None:
        import transformers

        version = transformers.__version__
    target = cache_root() / version / "tests"
    if all((target / name).is_file() for name in REQUIRED):
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / ".lock")):
        if all((target / name).is_file() for name in REQUIRED):
            return target
        with tempfile.TemporaryDirectory(dir=target.parent) as work:
            sdist = _download_sdist(version, Path(work))
            unpacked = Path(work) / "tests"
            _extract_tests(sdist, unpacked)
            missing = [name for name in REQUIRED if not (unpacked / name).is_file()]
            if missing:
                raise FetchError(f"the sdist of transformers {version} has no tests/{', tests/'.join(missing)}")
            if target.exists():
                shutil.rmtree(target)
            os.replace(unpacked, target)  # complete or absent, never half-written
    return target


def _download_sdist(version: str, folder: Path) -> Path:
    """The sdist through pip, so that the index configuration (mirrors, certificates) is the user's."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-build-isolation"]
    command += ["--no-binary", ":all:", f"transformers=={version}", "--dest", str(folder)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise FetchError(f"`pip download` of the transformers {version} sdist failed: {error}") from error
    archives = sorted(folder.glob(f"transformers-{version}.tar.gz"))
    if result.returncode != 0 or not archives:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise FetchError(f"`pip download` of the transformers {version} sdist failed: {' '.join(tail)}")
    return archives[0]


def _extract_tests(sdist: Path, destination: Path) -> None:
    """Regular files under `<top>/tests/` only; no links, absolute paths or `..`."""
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            parts = Path(member.name).parts
            if len(parts) < 3 or parts[1] != "tests" or not member.isfile() or ".." in parts:
                continue
            path = destination.joinpath(*parts[2:])
            path.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source, open(path, "wb") as out:
                shutil.copyfileobj(source, out)


def _stand_in(name: str, **attributes) -> None:
    module = types.ModuleType(f"{PACKAGE}.{name}")
    module.__dict__.update(attributes)
    sys.modules[module.__name__] = module


def load(version: str | None = None) -> tuple[types.ModuleType, types.ModuleType]:
    """`(test_modeling_common, test_configuration_common)` of the fetched tests."""
    folder = fetch(version)
    if not (folder / "__init__.py").is_file():
        # the repository's tests/ is a package (the sdist drops its empty __init__.py), and
        # test_configuration_common executes that file through `direct_transformers_import`
        (folder / "__init__.py").touch()
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(folder)]
        sys.modules[PACKAGE] = package
        for sub in ("exporters", "generation", "utils"):
            if not (folder / sub / "__init__.py").is_file():
                _stand_in(sub, __path__=[])
        if not (folder / "exporters" / "test_export.py").is_file():
            _stand_in("exporters.test_export", ExportTesterMixin=type("ExportTesterMixin", (), {}))
        if not (folder / "generation" / "test_utils.py").is_file():
            _stand_in("generation.test_utils", GenerationTesterMixin=type("GenerationTesterMixin", (), {}))
        if not (folder / "utils" / "test_configuration_utils.py").is_file():
            # general `PretrainedConfig` arguments that every config must store as given
            common = {"return_dict": False, "output_hidden_states": True, "chunk_size_feed_forward": 5}
            _stand_in("utils.test_configuration_utils", config_common_kwargs=common)
    return (
        importlib.import_module(f"{PACKAGE}.test_modeling_common"),
        importlib.import_module(f"{PACKAGE}.test_configuration_common"),
    )


if __name__ == "__main__":
    print(fetch())
