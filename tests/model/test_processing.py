"""The processor reproduces the original evaluation pipeline: pixels within 1e-5 of the original transform, token
ids equal to the original tokenizer's up to <|endoftext|>, including its text cleaning."""

import numpy as np
import pytest
import torch
from _helpers import require_bpe, tiny_tokenizer
from PIL import Image
from reference_original import OriginalTokenizer, original_image_transform

from transformers_diffclip import DiffCLIPImageProcessor, DiffCLIPProcessor, build_tokenizer
from transformers_diffclip.image_processing_diffclip import center_crop_offsets


# (width, height): landscape/portrait, odd crop margins (640×479 resizes to 299×224: margin 75, rounded half to
# even → 38, where flooring gives 37), images smaller than the crop, a square one
SIZES = [(640, 479), (479, 640), (300, 225), (500, 375), (224, 224), (120, 90), (1000, 223), (257, 641)]


def random_image(width, height, mode="RGB", seed=0):
    rng = np.random.default_rng(seed + width * 7 + height)
    if mode == "L":
        return Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), mode="L")
    # smooth content plus noise, like a photo, so that resampling differences would show
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(x / 17.0), np.cos(y / 11.0), np.sin((x + y) / 23.0)], axis=-1) * 100 + 128
    noisy = base + rng.normal(0, 20, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), mode="RGB")


@pytest.mark.parametrize("width, height", SIZES)
def test_pixel_values_match_original_transform(width, height):
    image = random_image(width, height)
    got = DiffCLIPImageProcessor()(image, return_tensors="pt")["pixel_values"][0]
    want = original_image_transform(image)
    assert got.shape == (3, 224, 224)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_grayscale_images_become_rgb():
    image = random_image(320, 250, mode="L")
    got = DiffCLIPImageProcessor()(image, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(got, original_image_transform(image), atol=1e-5, rtol=0)


def test_crop_rounds_half_to_even_like_torchvision():
    assert center_crop_offsets(299, 299, 224, 224) == (38, 38)  # 37.5 → 38
    assert center_crop_offsets(297, 224, 224, 224) == (36, 0)  # 36.5 → 36
    assert center_crop_offsets(225, 224, 224, 224) == (0, 0)  # 0.5 → 0


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(require_bpe())


@pytest.fixture(scope="module")
def tiny():
    """The tests' own tiny vocabulary: for mechanics that do not depend on the real ids."""
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def original_tokenizer():
    return OriginalTokenizer(require_bpe())


TEXTS = [
    "a photo of a cat.",
    "A Photo of  a\tDOG\n\n running   fast",
    "caf\u00c3\u00a9 au lait",  # mojibake: ftfy repairs it to "café"
    "<b> fish &amp;amp; chips </b>",  # HTML entities, unescaped twice
    "<b>&amp;amp;amp;</b>",  # needs three unescapes: "&amp;" must survive, so cleaning must run exactly once
    "Tom's and we've it'll I'd",
    "numbers 12345 and symbols #@!? ... :-)",
    "émigré naïve façade – “quoted” — 東京 🙂",
    "   leading and trailing spaces   ",
]


@pytest.mark.parametrize("text", TEXTS)
def test_input_ids_match_original_tokenizer(tokenizer, original_tokenizer, text):
    want = original_tokenizer(text)[0].tolist()
    end = want.index(49407) + 1
    got = tokenizer(text)["input_ids"]
    assert got == want[:end]


def test_batch_encoding_with_padding_matches_up_to_the_end_token(tokenizer, original_tokenizer):
    batch = tokenizer(TEXTS, padding="max_length", max_length=77, return_tensors="pt")
    want = original_tokenizer(TEXTS)
    for got_row, want_row, mask in zip(batch["input_ids"], want, batch["attention_mask"]):
        end = int(mask.sum())
        assert got_row[:end].tolist() == want_row[:end].tolist()
        assert set(got_row[end:].tolist()) <= {49407}  # padding with <|endoftext|>, the original pads with 0


def test_long_text_is_truncated_keeping_the_end_token(tiny):
    processor = DiffCLIPProcessor(image_processor=DiffCLIPImageProcessor(), tokenizer=tiny)
    ids = processor(text=["word " * 100], return_tensors="pt")["input_ids"]
    assert ids.shape == (1, 77) and ids[0, -1].item() == 49407


def test_processor_combines_both(tiny):
    processor = DiffCLIPProcessor(image_processor=DiffCLIPImageProcessor(), tokenizer=tiny)
    image = random_image(300, 200)
    out = processor(text=["a cat", "a dog"], images=[image, image], return_tensors="pt", padding=True)
    assert set(out) == {"input_ids", "attention_mask", "pixel_values"}
    # tiny vocabulary: "cat</w>" and "dog</w>" are merged tokens, "a</w>" a byte symbol with the end-of-word mark
    vocab = tiny.get_vocab()
    assert out["input_ids"][1].tolist() == [49406, vocab["a</w>"], vocab["dog</w>"], 49407]
    assert out["input_ids"].shape == (2, 4) and out["pixel_values"].shape == (2, 3, 224, 224)
    torch.testing.assert_close(out["pixel_values"][0], original_image_transform(image), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="needs `text`, `images` or both"):
        processor()
    with pytest.raises(ValueError, match="empty list"):
        processor(text=[])


def test_processor_round_trip(tmp_path, tiny):
    processor = DiffCLIPProcessor(image_processor=DiffCLIPImageProcessor(), tokenizer=tiny)
    processor.save_pretrained(tmp_path)
    loaded = DiffCLIPProcessor.from_pretrained(tmp_path)
    image = random_image(640, 479)
    a = processor(text=TEXTS, images=image, return_tensors="pt", padding=True)
    b = loaded(text=TEXTS, images=image, return_tensors="pt", padding=True)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])


def test_tokenizer_files_from_bpe(tmp_path):
    from transformers_diffclip import write_tokenizer_files

    vocab_path, merges_path = write_tokenizer_files(require_bpe(), tmp_path)
    import json

    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    assert len(vocab) == 49408 and vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["!"] == 0 and vocab["a</w>"] == 320
    assert merges_path.read_text(encoding="utf-8").count("\n") == 48894 + 1


def test_bad_bpe_file_is_explained(tmp_path):
    from transformers_diffclip import write_tokenizer_files

    with pytest.raises(FileNotFoundError, match="bpe_simple_vocab_16e6.txt.gz"):
        write_tokenizer_files(tmp_path / "missing.txt.gz", tmp_path)
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="not a readable gzipped CLIP BPE file"):
        write_tokenizer_files(bad, tmp_path)
