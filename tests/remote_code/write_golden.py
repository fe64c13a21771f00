"""Write tests/golden/remote_code_embeddings.json from the remote-code folders of a fixture.

Run it inside ONE of the matrix's virtual environments (the golden file records which); the suite then compares
every other version with it (tolerance 1e-6):

    DIFFCLIP_REMOTE_CODE_FIXTURE=.ci-venvs/fixture .ci-venvs/tf-4.57.6/bin/python tests/remote_code/write_golden.py

The fixture must have been written with the real CLIP BPE file or not — the golden values do not depend on the
tokenizer (the inputs are fixed token ids and pixel values) — but they do depend on the fixture's weights, so the
file records the fixture's fingerprint.
"""

import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import remote_env  # noqa: E402


def main() -> int:
    folder = remote_env.fixture_dir()
    if folder is None:
        print(f"set {remote_env.FIXTURE_ENV}; {remote_env.HOW_TO_RUN}", file=sys.stderr)
        return 2
    remote_env.prepare()
    import torch
    import transformers
    from transformers import AutoModel

    info = remote_env.load_fixture_info(folder)
    inputs = remote_env.load_inputs(folder)
    golden = {
        "written_with_transformers": transformers.__version__,
        "written_with_torch": torch.__version__,
        "fixture_fingerprint": info["fingerprint"],
        "tolerance": 1e-6,
        "variants": {},
    }
    for name, variant in info["variants"].items():
        model = AutoModel.from_pretrained(folder / variant["folder"], trust_remote_code=True).eval()
        values = remote_env.golden_values(model, inputs)
        golden["variants"][name] = {key: value.tolist() for key, value in values.items()}
    remote_env.GOLDEN_PATH.parent.mkdir(parents=True, exist_ok=True)
    remote_env.GOLDEN_PATH.write_text(json.dumps(golden, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {remote_env.GOLDEN_PATH} with transformers {transformers.__version__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
