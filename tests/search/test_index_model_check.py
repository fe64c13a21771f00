"""An index folder remembers what its model computes: extending it after the weights in the SAME model folder were
changed (a fine-tune saved over it) is refused, and the index is left as it was; the vision tower is changed here
(the tower the index's embeddings come from)."""

from __future__ import annotations

import pytest
import torch


pytest.importorskip("faiss", reason="faiss-cpu is not installed (the `search` extra)")
pytest.importorskip("pyarrow", reason="pyarrow is not installed (the `search` extra)")

from _tiny_index import random_images, tiny_model_folder  # noqa: E402

from transformers_diffclip import cli  # noqa: E402
from transformers_diffclip.search import Searcher, build_index, read_manifest  # noqa: E402


def _change_vision_weights(folder, model):
    with torch.no_grad():
        for name, parameter in model.vision_model.named_parameters():
            if name.endswith("weight") and parameter.dim() == 2:
                parameter.add_(torch.randn_like(parameter) * 0.5)
    model.save_pretrained(folder)


def test_extending_after_the_vision_weights_changed_in_place_is_refused(tmp_path, capsys):
    folder = tmp_path / "model"
    model, processor = tiny_model_folder(folder)
    random_images(tmp_path / "photos", 4)
    output = tmp_path / "index"
    build_index(folder, tmp_path / "photos", output, device="cpu", progress=False)
    before = {path.relative_to(output): path.read_bytes() for path in output.rglob("*") if path.is_file()}
    _change_vision_weights(folder, model)
    random_images(tmp_path / "photos", 2, first_seed=500)  # new images to add
    with pytest.raises(ValueError):
        build_index(folder, tmp_path / "photos", output, device="cpu", progress=False)
    after = {path.relative_to(output): path.read_bytes() for path in output.rglob("*") if path.is_file()}
    assert after == before
    argv = ["index", "--model", str(folder), "--data", str(tmp_path / "photos"), "--output", str(output)]
    assert cli.main(argv + ["--no-progress", "--device", "cpu"]) == 2
    assert str(output) in capsys.readouterr().err
    assert read_manifest(output)["count"] == 4
    with pytest.raises(ValueError):
        Searcher(output, folder, device="cpu")  # nor queried with the changed model
