"""Every invalid configuration value and input fails early with a message that names it."""

import pytest
import torch
from _helpers import text_batch, tiny_config

from transformers_diffclip import DiffCLIPConfig, DiffCLIPModel, DiffCLIPTextConfig, DiffCLIPVisionConfig


@pytest.mark.parametrize(
    "config_class, kwargs, message",
    [
        (DiffCLIPVisionConfig, {"num_attention_heads": 3, "hidden_size": 48}, "num_attention_heads must be even"),
        (DiffCLIPTextConfig, {"num_attention_heads": 5, "hidden_size": 40}, "num_attention_heads must be even"),
        (DiffCLIPVisionConfig, {"hidden_size": 100, "num_attention_heads": 8}, "hidden_size (100) must be divisible"),
        (DiffCLIPTextConfig, {"attention_dropout": 0.1}, "attention_dropout must be 0"),
        (DiffCLIPTextConfig, {"lambda_init_schedule": "linear"}, "lambda_init_schedule must be one of"),
        (DiffCLIPTextConfig, {"lambda_init": "high"}, "lambda_init must be a number"),
        (DiffCLIPVisionConfig, {"layer_norm_eps": 0}, "layer_norm_eps must be a positive number"),
        (DiffCLIPVisionConfig, {"hidden_act": "swishy"}, "hidden_act 'swishy' is not a known activation"),
        (DiffCLIPVisionConfig, {"image_size": 100, "patch_size": 16}, "image_size (100) must be divisible"),
        (DiffCLIPVisionConfig, {"num_hidden_layers": 2.0}, "num_hidden_layers must be a positive integer"),
        (DiffCLIPVisionConfig, {"patch_size": 0}, "patch_size must be a positive integer"),
        (DiffCLIPTextConfig, {"eos_token_id": 60000}, "eos_token_id must be an id below vocab_size"),
        (
            DiffCLIPTextConfig,
            {"use_differential_attention": "yes"},
            "use_differential_attention must be True or False",
        ),
        (DiffCLIPConfig, {"projection_dim": -1}, "projection_dim must be a positive integer"),
    ],
)
def test_invalid_config_values(config_class, kwargs, message):
    with pytest.raises(ValueError) as error:
        config_class(**kwargs)
    assert message in str(error.value)


def test_standard_attention_allows_odd_heads_and_dropout():
    config = DiffCLIPTextConfig(
        num_attention_heads=5, hidden_size=40, use_differential_attention=False, attention_dropout=0.1
    )
    assert config.num_attention_heads == 5


def test_tower_config_errors_surface_through_the_joint_config():
    with pytest.raises(ValueError, match="DiffCLIPVisionConfig.num_attention_heads must be even"):
        DiffCLIPConfig(vision_config={"num_attention_heads": 3, "hidden_size": 48})
    with pytest.raises(ValueError, match="Expected a dict or a DiffCLIPTextConfig"):
        DiffCLIPConfig(text_config=[1, 2])


@pytest.fixture(scope="module")
def model():
    return DiffCLIPModel(tiny_config()).eval()


def test_wrong_image_size(model):
    with pytest.raises(
        ValueError, match=r"Input image size \(48\*48\) doesn't match model \(32\*32\).*interpolate_pos_encoding"
    ):
        model.get_image_features(pixel_values=torch.randn(1, 3, 48, 48))


def test_image_size_not_a_multiple_of_the_patch(model):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model.get_image_features(pixel_values=torch.randn(1, 3, 36, 36), interpolate_pos_encoding=True)


def test_wrong_channel_count(model):
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(batch_size, 3, height, width\)"):
        model.get_image_features(pixel_values=torch.randn(1, 1, 32, 32))


def test_text_longer_than_77(model):
    with pytest.raises(ValueError, match="Sequence length 78 exceeds max_position_embeddings"):
        model.get_text_features(input_ids=torch.ones(1, 78, dtype=torch.long))


def test_left_padding_is_refused(model):
    ids = text_batch(batch=2, length=10, lengths=(3, 5))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1, 1], [1] * 10])
    with pytest.raises(ValueError, match="expects right padding"):
        model.get_text_features(input_ids=ids, attention_mask=mask)


def test_missing_inputs(model):
    with pytest.raises(ValueError, match="specify input_ids"):
        model.get_text_features()
    with pytest.raises(ValueError, match="specify pixel_values"):
        model.get_image_features()


def test_loss_needs_pairs(model):
    with pytest.raises(ValueError, match="needs matching image-text pairs: got 2 images and 3 texts"):
        model(input_ids=text_batch(batch=3), pixel_values=torch.randn(2, 3, 32, 32), return_loss=True)
