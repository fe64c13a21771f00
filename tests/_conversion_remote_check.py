import sys  # noqa: I001 — the next statement must run before anything can import the package


sys.modules["transformers_diffclip"] = None  # any `import transformers_diffclip` now raises ImportError

"""Run by tests/original/test_conversion.py in a subprocess: load a converted folder through remote code only.

Usage: python tests/_conversion_remote_check.py FOLDER IMAGE OUTPUT_JSON LABEL [LABEL ...]

Loads FOLDER with AutoModel / AutoProcessor (trust_remote_code=True), classifies IMAGE with the zero-shot pipeline
and writes the pipeline's scores, the model's logits for the pipeline's prompts and the module names of the loaded
classes to OUTPUT_JSON.
"""

import json  # noqa: E402

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoModel, AutoProcessor, pipeline  # noqa: E402


def main() -> None:
    folder, image_path, output_path, *labels = sys.argv[1:]
    try:
        import transformers_diffclip  # noqa: F401
    except ImportError:
        package_importable = False
    else:
        package_importable = True

    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    prompts = [f"This is a photo of {label}." for label in labels]  # the pipeline's default hypothesis template
    inputs = processor(text=prompts, images=Image.open(image_path), return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**inputs).logits_per_image[0]

    classifier = pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)
    scores = {row["label"]: row["score"] for row in classifier(image_path, candidate_labels=labels)}
    result = {
        "package_importable": package_importable,
        "model_module": type(model).__module__,
        "processor_module": type(processor).__module__,
        "pipeline_model_module": type(classifier.model).__module__,
        "logits": logits.tolist(),
        "scores": [scores[label] for label in labels],
    }
    with open(output_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
