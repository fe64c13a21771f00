# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""DiffCLIP model configuration.

DiffCLIP (arXiv:2503.06626) is CLIP whose attention layers are *differential*: every pair of
heads computes two softmax maps and subtracts the second, scaled by a learned λ, from the first.
The configurations below describe both towers; each tower can also be switched back to standard
multi-head attention, so the CLIP baselines released next to DiffCLIP, and the paper's DiffCLIP†
(differential attention in the vision tower only), load into the same classes.

This file is copied into Hub folders as remote code: it imports only the standard library and
transformers, and it works with transformers 4.57 through 5.x (plain `__init__` configs, which
both major versions accept).
"""

import math

import transformers
from transformers import PretrainedConfig
from transformers.utils import logging


logger = logging.get_logger(__name__)

# The transformers releases this code is tested against. Outside this range the remote code
# refuses to run rather than risk silently wrong numbers.
MIN_TRANSFORMERS_VERSION = (4, 57)
MAX_TRANSFORMERS_MAJOR = 5


def _check_transformers_version(version: str = transformers.__version__) -> None:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    major_minor = tuple(parts + [0] * (2 - len(parts)))
    if major_minor < MIN_TRANSFORMERS_VERSION or major_minor[0] > MAX_TRANSFORMERS_MAJOR:
        raise ImportError(
            f"DiffCLIP's model code supports transformers >= {'.'.join(map(str, MIN_TRANSFORMERS_VERSION))} and "
            f"< {MAX_TRANSFORMERS_MAJOR + 1}, but transformers {version} is installed. "
            f"Install a supported release, e.g. `pip install 'transformers>=4.57,<{MAX_TRANSFORMERS_MAJOR + 1}'`."
        )


_check_transformers_version()

LAMBDA_INIT_SCHEDULES = ("constant", "depth")
LOGIT_SCALE_INIT = math.log(1 / 0.07)  # the stored logit scale is a log; training starts at temperature 0.07
MAX_LOGIT_SCALE = math.log(100.0)  # training clamps the logit scale to at most 100


def lambda_init_for_layer(layer_idx: int, lambda_init: float = 0.8, schedule: str = "constant") -> float:
    """λ_init of layer `layer_idx` (0-based).

    `"constant"`: `lambda_init` in every layer (the released DiffCLIP models use 0.8).
    `"depth"`: the Differential Transformer schedule 0.8 − 0.6·exp(−0.3·l) (the paper's DiffCLIP*).
    Computed with Python math so that it never touches a tensor (safe on the meta device).
    """
    if schedule == "depth":
        return 0.8 - 0.6 * math.exp(-0.3 * layer_idx)
    return float(lambda_init)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class _DiffCLIPTowerConfig(PretrainedConfig):
    """Fields and validation that the text and the vision tower share."""

    def _init_tower(
        self,
        hidden_size,
        intermediate_size,
        projection_dim,
        num_hidden_layers,
        num_attention_heads,
        hidden_act,
        layer_norm_eps,
        use_differential_attention,
        lambda_init,
        lambda_init_schedule,
        rms_norm_eps,
        attention_dropout,
        initializer_range,
        initializer_factor,
    ):
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.projection_dim = projection_dim
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.use_differential_attention = use_differential_attention
        self.lambda_init = lambda_init
        self.lambda_init_schedule = lambda_init_schedule
        self.rms_norm_eps = rms_norm_eps
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.initializer_factor = initializer_factor

    def _validate_tower(self):
        name = type(self).__name__
        for field in (
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "projection_dim",
        ):
            value = getattr(self, field)
            _require(
                isinstance(value, int) and not isinstance(value, bool) and value > 0,
                f"{name}.{field} must be a positive integer, got {value!r}.",
            )
        _require(
            self.hidden_size % self.num_attention_heads == 0,
            f"{name}.hidden_size ({self.hidden_size}) must be divisible by "
            f"{name}.num_attention_heads ({self.num_attention_heads}).",
        )
        _require(
            isinstance(self.use_differential_attention, bool),
            f"{name}.use_differential_attention must be True or False, got {self.use_differential_attention!r}.",
        )
        if self.use_differential_attention:
            _require(
                self.num_attention_heads % 2 == 0,
                f"{name}.num_attention_heads must be even for differential attention (heads work in pairs), "
                f"got {self.num_attention_heads}.",
            )
            _require(
                not self.attention_dropout,
                f"{name}.attention_dropout must be 0 with differential attention: the paper defines no dropout for "
                f"the difference of two attention maps, got {self.attention_dropout!r}.",
            )
        _require(
            self.lambda_init_schedule in LAMBDA_INIT_SCHEDULES,
            f"{name}.lambda_init_schedule must be one of {LAMBDA_INIT_SCHEDULES}, got {self.lambda_init_schedule!r}.",
        )
        _require(
            isinstance(self.lambda_init, (int, float))
            and not isinstance(self.lambda_init, bool)
            and math.isfinite(self.lambda_init),
            f"{name}.lambda_init must be a number (finite), got {self.lambda_init!r}.",
        )
        for field in ("layer_norm_eps", "rms_norm_eps"):
            value = getattr(self, field)
            _require(
                isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
                f"{name}.{field} must be a positive number, got {value!r}.",
            )
        _require(
            isinstance(self.attention_dropout, (int, float)) and 0 <= self.attention_dropout < 1,
            f"{name}.attention_dropout must be in [0, 1), got {self.attention_dropout!r}.",
        )
        # Imported lazily: the activation table lives in transformers and is the one the model uses.
        from transformers.activations import ACT2FN

        _require(
            self.hidden_act in ACT2FN,
            f"{name}.hidden_act {self.hidden_act!r} is not a known activation; use one of "
            f"{sorted(k for k in ACT2FN if isinstance(k, str))}.",
        )

    def lambda_init_for_layer(self, layer_idx: int) -> float:
        return lambda_init_for_layer(layer_idx, self.lambda_init, self.lambda_init_schedule)


class DiffCLIPTextConfig(_DiffCLIPTowerConfig):
    r"""
    Configuration of the DiffCLIP text tower. Defaults are the released DiffCLIP ViT-B/16 text tower.

    Args:
        vocab_size (`int`, defaults to 49408): size of the CLIP BPE vocabulary.
        hidden_size (`int`, defaults to 512): width of the transformer.
        intermediate_size (`int`, defaults to 2048): width of the MLP.
        projection_dim (`int`, defaults to 512): size of the joint embedding.
        num_hidden_layers (`int`, defaults to 12): number of layers.
        num_attention_heads (`int`, defaults to 8): number of heads; with differential attention, heads 2i and 2i+1
            form effective head i, so the maps returned by `output_attentions` have `num_attention_heads // 2` heads.
        max_position_embeddings (`int`, defaults to 77): longest sequence.
        hidden_act (`str`, defaults to `"quick_gelu"`): MLP activation (`x·sigmoid(1.702x)`).
        layer_norm_eps (`float`, defaults to 1e-5): LayerNorm epsilon.
        use_differential_attention (`bool`, defaults to `True`): differential or standard attention.
        lambda_init (`float`, defaults to 0.8): λ_init of every layer when `lambda_init_schedule="constant"`.
        lambda_init_schedule (`str`, defaults to `"constant"`): `"constant"` or `"depth"` (0.8 − 0.6·exp(−0.3·l),
            the paper's DiffCLIP*; `lambda_init` is then unused).
        rms_norm_eps (`float`, defaults to 1e-5): epsilon of the per-head RMSNorm of differential attention.
        attention_dropout (`float`, defaults to 0.0): must stay 0 for differential attention.
        initializer_range, initializer_factor: scales used by `_init_weights` for newly created weights.
        pad_token_id, bos_token_id, eos_token_id: special ids of the CLIP tokenizer; the pooled token is the first
            `eos_token_id` of each row.
    """

    model_type = "diffclip_text_model"
    base_config_key = "text_config"

    def __init__(
        self,
        vocab_size=49408,
        hidden_size=512,
        intermediate_size=2048,
        projection_dim=512,
        num_hidden_layers=12,
        num_attention_heads=8,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        use_differential_attention=True,
        lambda_init=0.8,
        lambda_init_schedule="constant",
        rms_norm_eps=1e-5,
        attention_dropout=0.0,
        initializer_range=0.02,
        initializer_factor=1.0,
        pad_token_id=49407,
        bos_token_id=49406,
        eos_token_id=49407,
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        self._init_tower(
            hidden_size,
            intermediate_size,
            projection_dim,
            num_hidden_layers,
            num_attention_heads,
            hidden_act,
            layer_norm_eps,
            use_differential_attention,
            lambda_init,
            lambda_init_schedule,
            rms_norm_eps,
            attention_dropout,
            initializer_range,
            initializer_factor,
        )
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self._validate_tower()
        for field in ("vocab_size", "max_position_embeddings"):
            value = getattr(self, field)
            _require(
                isinstance(value, int) and not isinstance(value, bool) and value > 0,
                f"DiffCLIPTextConfig.{field} must be a positive integer, got {value!r}.",
            )
        _require(
            isinstance(self.eos_token_id, int) and 0 <= self.eos_token_id < self.vocab_size,
            f"DiffCLIPTextConfig.eos_token_id must be an id below vocab_size ({self.vocab_size}), "
            f"got {self.eos_token_id!r}.",
        )


class DiffCLIPVisionConfig(_DiffCLIPTowerConfig):
    r"""
    Configuration of the DiffCLIP vision tower, a ViT. Defaults are the released DiffCLIP ViT-B/16 vision tower.

    Args:
        hidden_size (`int`, defaults to 768), intermediate_size (`int`, defaults to 3072),
        projection_dim (`int`, defaults to 512), num_hidden_layers (`int`, defaults to 12),
        num_attention_heads (`int`, defaults to 12): as in [`DiffCLIPTextConfig`].
        num_channels (`int`, defaults to 3): input channels.
        image_size (`int`, defaults to 224): input resolution the position embeddings were trained for.
        patch_size (`int`, defaults to 16): patch size of the convolutional patch embedding.
        hidden_act (`str`, defaults to `"gelu"`): exact (erf) GELU, as in timm's ViT.
        layer_norm_eps (`float`, defaults to 1e-5): the CLIP baseline's timm ViT uses 1e-6.
        patch_embedding_bias (`bool`, defaults to `True`): whether the patch embedding has a bias (timm: yes,
            OpenAI CLIP: no).
        use_pre_layernorm (`bool`, defaults to `False`): a LayerNorm before the first layer (OpenAI CLIP has one,
            the timm ViT of DiffCLIP has none).
        use_differential_attention, lambda_init, lambda_init_schedule, rms_norm_eps, attention_dropout,
        initializer_range, initializer_factor: as in [`DiffCLIPTextConfig`].
    """

    model_type = "diffclip_vision_model"
    base_config_key = "vision_config"

    def __init__(
        self,
        hidden_size=768,
        intermediate_size=3072,
        projection_dim=512,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_channels=3,
        image_size=224,
        patch_size=16,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        patch_embedding_bias=True,
        use_pre_layernorm=False,
        use_differential_attention=True,
        lambda_init=0.8,
        lambda_init_schedule="constant",
        rms_norm_eps=1e-5,
        attention_dropout=0.0,
        initializer_range=0.02,
        initializer_factor=1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._init_tower(
            hidden_size,
            intermediate_size,
            projection_dim,
            num_hidden_layers,
            num_attention_heads,
            hidden_act,
            layer_norm_eps,
            use_differential_attention,
            lambda_init,
            lambda_init_schedule,
            rms_norm_eps,
            attention_dropout,
            initializer_range,
            initializer_factor,
        )
        self.num_channels = num_channels
        self.image_size = image_size
        self.patch_size = patch_size
        self.patch_embedding_bias = patch_embedding_bias
        self.use_pre_layernorm = use_pre_layernorm
        self._validate_tower()
        for field in ("num_channels", "image_size", "patch_size"):
            value = getattr(self, field)
            _require(
                isinstance(value, int) and not isinstance(value, bool) and value > 0,
                f"DiffCLIPVisionConfig.{field} must be a positive integer, got {value!r}.",
            )
        _require(
            self.image_size % self.patch_size == 0,
            f"DiffCLIPVisionConfig.image_size ({self.image_size}) must be divisible by "
            f"DiffCLIPVisionConfig.patch_size ({self.patch_size}).",
        )


class DiffCLIPConfig(PretrainedConfig):
    r"""
    Configuration of [`DiffCLIPModel`]: a text tower, a vision tower, their projections to a joint space and the
    learned temperature.

    Args:
        text_config (`dict` or [`DiffCLIPTextConfig`], *optional*): the text tower.
        vision_config (`dict` or [`DiffCLIPVisionConfig`], *optional*): the vision tower.
        projection_dim (`int`, defaults to 512): size of the joint embedding; both towers' `projection_dim` are set
            to it.
        logit_scale_init_value (`float`, defaults to ln(1/0.07) ≈ 2.6593): initial log of the logit scale.
        max_logit_scale (`float`, defaults to ln(100)): ceiling that training clamps the log scale to.

    Example:

    ```python
    >>> from transformers_diffclip import DiffCLIPConfig, DiffCLIPModel

    >>> config = DiffCLIPConfig()  # the released DiffCLIP ViT-B/16
    >>> baseline = DiffCLIPConfig(
    ...     text_config={"use_differential_attention": False},
    ...     vision_config={"use_differential_attention": False, "layer_norm_eps": 1e-6},
    ... )  # the CLIP baseline released beside it
    >>> model = DiffCLIPModel(config)
    ```
    """

    model_type = "diffclip"
    sub_configs = {"text_config": DiffCLIPTextConfig, "vision_config": DiffCLIPVisionConfig}

    def __init__(
        self,
        text_config=None,
        vision_config=None,
        projection_dim=512,
        logit_scale_init_value=LOGIT_SCALE_INIT,
        max_logit_scale=MAX_LOGIT_SCALE,
        initializer_factor=1.0,
        **kwargs,
    ):
        attn_implementation = kwargs.pop("attn_implementation", None)
        super().__init__(**kwargs)
        self.text_config = self._tower_config(text_config, DiffCLIPTextConfig, projection_dim)
        self.vision_config = self._tower_config(vision_config, DiffCLIPVisionConfig, projection_dim)
        if attn_implementation is not None:
            # set once the towers exist: transformers' setter passes it (a name, or a dict per sub-config) to them
            self._attn_implementation = attn_implementation
        self.projection_dim = projection_dim
        self.logit_scale_init_value = logit_scale_init_value
        self.max_logit_scale = max_logit_scale
        self.initializer_factor = initializer_factor
        _require(
            isinstance(projection_dim, int) and not isinstance(projection_dim, bool) and projection_dim > 0,
            f"DiffCLIPConfig.projection_dim must be a positive integer, got {projection_dim!r}.",
        )
        for field in ("max_logit_scale", "logit_scale_init_value"):
            value = getattr(self, field)
            _require(
                isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                f"DiffCLIPConfig.{field} must be a number (finite), got {value!r}.",
            )

    @staticmethod
    def _tower_config(value, config_class, projection_dim):
        if value is None:
            value = {}
        if isinstance(value, config_class):
            value = value.to_dict()
        if not isinstance(value, dict):
            raise ValueError(
                f"Expected a dict or a {config_class.__name__} for the tower configuration, "
                f"got {type(value).__name__}."
            )
        value = {k: v for k, v in value.items() if k not in ("model_type", "transformers_version")}
        value["projection_dim"] = projection_dim
        return config_class(**value)

    @classmethod
    def from_text_vision_configs(cls, text_config, vision_config, **kwargs):
        """Build a DiffCLIPConfig from a text and a vision tower configuration."""
        return cls(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), **kwargs)

    def to_dict(self):
        output = super().to_dict()
        output["text_config"] = self.text_config.to_dict()
        output["vision_config"] = self.vision_config.to_dict()
        # `register_for_auto_class` records one Auto class per model class; the zero-shot pipeline loads through
        # AutoModelForZeroShotImageClassification, so the dual encoder is listed under both.
        auto_map = output.get("auto_map")
        if isinstance(auto_map, dict) and str(auto_map.get("AutoModel", "")).endswith(".DiffCLIPModel"):
            auto_map.setdefault("AutoModelForZeroShotImageClassification", auto_map["AutoModel"])
        return output


__all__ = ["DiffCLIPConfig", "DiffCLIPTextConfig", "DiffCLIPVisionConfig", "lambda_init_for_layer"]
