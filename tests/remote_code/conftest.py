"""Remote-code suite: loads converted-style folders WITHOUT transformers_diffclip, once per transformers version.

Runs only when DIFFCLIP_REMOTE_CODE_FIXTURE names a folder written by make_fixture.py, and only in its own process
(`python -m pytest tests/remote_code`): it blocks `import transformers_diffclip` for the whole process. Elsewhere
(the normal `pytest` run) its tests are reported as skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parent))
import remote_env  # noqa: E402


FIXTURE = remote_env.fixture_dir()
if FIXTURE is not None:
    if "transformers_diffclip" in sys.modules or "transformers" in sys.modules:
        raise pytest.UsageError(
            "the remote-code suite must run in its own process, before anything imports transformers; "
            + remote_env.HOW_TO_RUN
        )
    remote_env.prepare()

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    if FIXTURE is not None:
        return
    skip = pytest.mark.skip(reason=f"needs {remote_env.FIXTURE_ENV}: {remote_env.HOW_TO_RUN}")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    return FIXTURE


@pytest.fixture(scope="session")
def fixture_info(fixture_dir) -> dict:
    return remote_env.load_fixture_info(fixture_dir)


@pytest.fixture(scope="session")
def inputs(fixture_dir) -> dict:
    return remote_env.load_inputs(fixture_dir)


@pytest.fixture(scope="session")
def ref():
    return remote_env.import_reference()


@pytest.fixture(scope="session")
def models(fixture_dir, fixture_info):
    """`models(variant, **from_pretrained_kwargs)`: a remote-code model in eval mode, loaded once per session.
    Shared between tests: do not modify it (load your own with `load_model` for that)."""
    from transformers import AutoModel

    cache = {}

    def get(variant, **kwargs):
        key = (variant, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
        if key not in cache:
            folder = fixture_dir / fixture_info["variants"][variant]["folder"]
            cache[key] = AutoModel.from_pretrained(folder, trust_remote_code=True, **kwargs).eval()
        return cache[key]

    return get


@pytest.fixture(scope="session")
def expected(fixture_dir, fixture_info, inputs, ref):
    """`expected(variant)`: the original forward (float64, with attention maps) of the fixture's inputs, from the
    ORIGINAL-layout tensors; computed once per variant."""
    cache = {}

    def get(variant):
        if variant not in cache:
            cache[variant] = remote_env.original_forward(
                ref, fixture_dir, fixture_info, variant, inputs["input_ids"], inputs["pixel_values"], True
            )
        return cache[variant]

    return get


@pytest.fixture(scope="session")
def processor(fixture_dir, fixture_info):
    """The `diffclip` folder's processor through AutoProcessor, loaded once (do not modify it)."""
    from transformers import AutoProcessor

    folder = fixture_dir / fixture_info["variants"]["diffclip"]["folder"]
    return AutoProcessor.from_pretrained(folder, trust_remote_code=True)
