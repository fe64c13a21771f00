"""The Space folder: its metadata header, its requirements, and its app.py building the demo page unchanged."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest


SPACE = Path(__file__).resolve().parents[2] / "space"


def test_space_metadata_and_requirements():
    from huggingface_hub import metadata_load  # the Hub's own reader of the YAML header

    meta = metadata_load(SPACE / "README.md")
    assert meta["sdk"] == "gradio" and (SPACE / meta["app_file"]).is_file()
    assert meta["license"] == "apache-2.0" and meta["title"]
    major = int(str(meta["sdk_version"]).split(".")[0])
    assert "hammh0a/DiffCLIP_ViTB16_CC12M" in meta["models"]
    pyproject = (SPACE.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert '"gradio>=5"' in pyproject and major >= 5  # the Space's Gradio is one the demo extra allows
    requirements = [line for line in (SPACE / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert any(line.startswith("transformers-diffclip[demo]") for line in requirements)


def test_space_app_builds_the_demo_page(monkeypatch, tmp_path):
    gradio = pytest.importorskip("gradio", reason="gradio is not installed (the `demo` extra)")
    from transformers_diffclip.demo import app as demo_app

    calls = []
    real = demo_app.build_demo
    monkeypatch.setattr(demo_app, "build_demo", lambda **kwargs: calls.append(kwargs) or real(**kwargs))
    monkeypatch.setenv("DIFFCLIP_MODEL", "some/model")
    monkeypatch.setenv("DIFFCLIP_INDEX", str(tmp_path))
    namespace = runpy.run_path(str(SPACE / "app.py"), run_name="space_app")
    assert isinstance(namespace["demo"], gradio.Blocks)
    assert calls == [dict(model="some/model", baseline=None, index=str(tmp_path), examples=())]
