"""The environment of the remote-code suite: the package blocked, the Hub offline, the fixture folder.

`prepare()` must run before transformers is imported (conftest.py and write_golden.py call it first).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path


FIXTURE_ENV = "DIFFCLIP_REMOTE_CODE_FIXTURE"
TESTS_DIR = Path(__file__).resolve().parents[1]
GOLDEN_PATH = TESTS_DIR / "golden" / "remote_code_embeddings.json"
HOW_TO_RUN = (
    "the remote-code suite runs once per transformers version via `.ci/version_matrix.sh`; to run it by hand: "
    "`python tests/remote_code/make_fixture.py --out DIR` (with the package installed), then "
    f"`{FIXTURE_ENV}=DIR python -m pytest tests/remote_code` in its own process"
)


def fixture_dir() -> Path | None:
    value = os.environ.get(FIXTURE_ENV)
    return Path(value).resolve() if value else None


def prepare() -> None:
    """Make `import transformers_diffclip` fail and keep every load local, before transformers is imported."""
    # None in sys.modules makes every import of the package raise ImportError, even though it is installed: the
    # folder must load through its own copy of the code.
    sys.modules["transformers_diffclip"] = None
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "HF_MODULES_CACHE" not in os.environ:
        os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="diffclip-modules-")
    if "transformers" in sys.modules:
        raise RuntimeError("remote_env.prepare() must run before transformers is imported")


def import_reference():
    sys.path.insert(0, str(TESTS_DIR.parent / "conversion"))  # the one reference, shared with the converter
    import reference_original

    return reference_original


def load_fixture_info(folder: Path) -> dict:
    path = folder / "fixture.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {HOW_TO_RUN}")
    return json.loads(path.read_text())


def load_inputs(folder: Path):
    from safetensors.torch import load_file

    return load_file(str(folder / "inputs.safetensors"))


def as_embedding(features):
    """`get_*_features` returns a tensor on transformers 4.x and an output whose `pooler_output` is the embedding on
    5.x; this gives the tensor in both cases."""
    return features if hasattr(features, "dim") else features.pooler_output


def golden_values(model, inputs) -> dict:
    """What the golden file records for one model: projected (unnormalised) embeddings and the logits."""
    import torch

    with torch.no_grad():
        image = as_embedding(model.get_image_features(pixel_values=inputs["pixel_values"]))
        text = as_embedding(
            model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        )
        logits = model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], pixel_values=inputs["pixel_values"]
        ).logits_per_image
    return {"image_embeds": image, "text_embeds": text, "logits_per_image": logits}


def original_forward(ref, fixture_dir, fixture_info, variant, input_ids, pixel_values, return_attentions=False):
    """The original forward in float64 from the original-layout tensors of `variant`."""
    import torch
    from safetensors.torch import load_file

    info, tiny = fixture_info["variants"][variant], fixture_info["tiny"]
    state_dict = {k: v.double() for k, v in load_file(str(fixture_dir / info["original_weights"])).items()}
    with torch.no_grad():
        return ref.original_forward(
            state_dict,
            input_ids,
            None if pixel_values is None else pixel_values.double(),
            vision_heads=tiny["vision_heads"],
            text_heads=tiny["text_heads"],
            diff_vision=info["diff_vision"],
            diff_text=info["diff_text"],
            lambda_init=info["lambda_init"],
            vision_eps=info["vision_eps"],
            return_attentions=return_attentions,
        )
