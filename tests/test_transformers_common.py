"""transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`) on the five DiffCLIP classes, in
differential and in standard-attention mode, adapted as transformers' CLIP tests adapt them.

The test files come from the installed release's source distribution, fetched at test time into a cache outside
the checkout (tests/_transformers_tests.py); where they cannot be fetched this module is skipped with the reason.
Every deliberate difference from a stock transformers model is skipped below by name, with its reason (README,
"transformers' common tests").

In the version matrix (.ci/matrix.py) the same tests run under each transformers release, in venvs where
transformers_diffclip is not installed: there $DIFFCLIP_COMMON_TESTS_FOLDER names a converted folder, and the classes
are its remote code (the files copied into Hub folders, which import only torch and transformers), loaded as
`trust_remote_code` loads them. With $DIFFCLIP_COMMON_TESTS_REQUIRED=1 (CI) a release whose tests cannot be fetched or
imported fails the run instead of skipping it.
"""

import inspect
import os
import re
import tempfile
import unittest

import pytest
import torch
import transformers


REQUIRED = os.environ.get("DIFFCLIP_COMMON_TESTS_REQUIRED") == "1"


def _unavailable(reason):
    if REQUIRED:
        raise RuntimeError(f"{reason} (DIFFCLIP_COMMON_TESTS_REQUIRED=1: CI needs these tests)")
    pytest.skip(reason, allow_module_level=True)


try:
    from parameterized import parameterized  # transformers' common tests use it
except ImportError:
    _unavailable("transformers' common tests need `parameterized` (pip install parameterized)")

import _transformers_tests  # noqa: E402


try:
    common, config_common = _transformers_tests.load()
except (_transformers_tests.FetchError, ImportError, SyntaxError) as error:
    _unavailable(f"transformers {transformers.__version__}'s common tests are unavailable: {error}")


def _diffclip_classes():
    """The eight classes, from the installed package, or (version matrix) from a converted folder's remote code."""
    names = ["DiffCLIPConfig", "DiffCLIPTextConfig", "DiffCLIPVisionConfig"]
    names += ["DiffCLIPModel", "DiffCLIPTextModel", "DiffCLIPTextModelWithProjection"]
    names += ["DiffCLIPVisionModel", "DiffCLIPVisionModelWithProjection"]
    folder = os.environ.get("DIFFCLIP_COMMON_TESTS_FOLDER")
    if not folder:
        import transformers_diffclip

        return [getattr(transformers_diffclip, name) for name in names]
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    def load(name):
        module = "configuration_diffclip" if name.endswith("Config") else "modeling_diffclip"
        return get_class_from_dynamic_module(f"{module}.{name}", folder)

    return [load(name) for name in names]


(
    DiffCLIPConfig,
    DiffCLIPTextConfig,
    DiffCLIPVisionConfig,
    DiffCLIPModel,
    DiffCLIPTextModel,
    DiffCLIPTextModelWithProjection,
    DiffCLIPVisionModel,
    DiffCLIPVisionModelWithProjection,
) = _diffclip_classes()


ModelTesterMixin, ConfigTester = common.ModelTesterMixin, config_common.ConfigTester
floats_tensor, ids_tensor = common.floats_tensor, common.ids_tensor


# ------------------------------------------------------------------------------------------- deliberate differences

# Skipped in every class and mode.
SKIPS_ALL = {
    "test_inputs_embeds": "DiffCLIP's towers take input_ids / pixel_values only (as CLIP's)",
}
# Skipped in the tower classes (as transformers' CLIP tests skip them).
SKIPS_TOWERS = {
    name: "a tower has no loss to train on (as in CLIP's tests); training runs in the DiffCLIPModel classes"
    for name in (
        "test_training",
        "test_training_gradient_checkpointing",
        "test_training_gradient_checkpointing_use_reentrant",  # transformers 4.x's name of the _true case
        "test_training_gradient_checkpointing_use_reentrant_false",
        "test_training_gradient_checkpointing_use_reentrant_true",
    )
}
# Skipped in the text classes.
SKIPS_TEXT = {
    "test_model_forward_default_config_values": "the text config refuses special token ids outside the vocabulary; "
    "its defaults are the CLIP tokenizer's (49406, 49407), so a 99-token config without them is invalid by design",
}
# Skipped where the tower uses differential attention.
SKIPS_DIFFERENTIAL = {
    "test_attention_outputs": "differential attention returns one map A1 − λ·A2 per head pair, "
    "num_attention_heads // 2 maps per layer (documented; checked in tests/test_modeling.py)",
}
# Skipped for the dual encoder (as transformers' CLIP tests skip them: tested per tower).
SKIPS_DUAL = {
    "test_hidden_states_output": "tested in the tower classes (as CLIP's tests do)",
    "test_retain_grad_hidden_states_attentions": "tested in the tower classes (as CLIP's tests do)",
    "test_model_get_set_embeddings": "the dual encoder has no single input embedding (as CLIP's)",
    "test_attention_outputs": "tested in the tower classes (as CLIP's tests do)",
    "test_model_forward_default_config_values": SKIPS_TEXT["test_model_forward_default_config_values"],
}


# Parameterised cases skipped by pattern (the full name of each case matches).
LEFT_PADDING = (
    r"test_eager_matches_sdpa_inference_\d+_\w+_pad_left(_sdpa_kernels|_output_attentions)?",
    "left padding is refused with a clear error by design (the CLIP tokenizer pads right, and with the causal mask "
    "right padding is exact); the same cases with right padding run (as CLIP's tests exclude left padding)",
)
HALF_PRECISION_STANDARD = (
    r"test_eager_matches_sdpa_inference_\d+_(fp16|bf16)_\w+",
    "suite time on CPU: standard attention is the registry's kernel as in CLIP; half precision runs in the "
    "differential classes, float32 here",
)


def with_skips(*tables, patterns=()):
    """Class decorator: replaces each named test (or each test matching one of `patterns`, (regex, reason) pairs)
    with a skip that gives its reason. A name the installed release does not test is left out (not reported as a
    skip)."""

    def skip(cls, name, reason):
        @unittest.skip(reason)
        def skipped(self):
            pass

        skipped.__name__ = name
        setattr(cls, name, skipped)

    def apply(cls):
        for table in tables:
            for name, reason in table.items():
                if hasattr(cls, name):
                    skip(cls, name, reason)
        for pattern, reason in patterns:
            for name in [n for n in dir(cls) if re.fullmatch(pattern, n)]:
                skip(cls, name, reason)
        return cls

    return apply


# --------------------------------------------------------------------------------------------------- older releases
# The matrix runs these tests under older releases too (4.57.6, 5.0.0), each from its own sdist. Their suites test
# features that later releases removed, or check them with values later releases no longer use; the adaptations,
# and only these:
# - head pruning and head masking (4.x: `test_head_pruning*`, `test_headmasking`): DiffCLIP has neither, and 4.x's
#   CLIP tests switch them off the same way (`test_pruning = test_head_masking = False`; unused by 5.x);
# - `ConfigTester.create_and_test_config_common_properties` (4.x and early 5.x, 5.0.0 included): it also builds a
#   config with each common property set to its index (hidden_size=0, num_attention_heads=1, projection_dim=0),
#   which DiffCLIP's configs refuse with a clear error by design (a zero-width tower or projection; differential
#   attention needs an even head count); there the later releases' check (the properties exist) runs instead.
INDEX_VALUED_PROPERTIES = "enumerate(common_properties)" in inspect.getsource(
    ConfigTester.create_and_test_config_common_properties
)


class DiffCLIPConfigTester(ConfigTester):
    if INDEX_VALUED_PROPERTIES:

        def create_and_test_config_common_properties(self):
            config = self.config_class(**self.inputs_dict)
            common_properties = (
                ["hidden_size", "num_attention_heads", "num_hidden_layers"]
                if self.common_properties is None and not self.config_class.sub_configs
                else self.common_properties
            )
            common_properties = list(common_properties or [])
            if self.has_text_modality:
                common_properties.append("vocab_size")
            for prop in common_properties:
                self.parent.assertTrue(hasattr(config, prop), msg=f"`{prop}` does not exist")


# ----------------------------------------------------------------------------------------------------------- testers


class DiffCLIPVisionModelTester:
    def __init__(self, parent, differential=True, batch_size=6, image_size=24, patch_size=6, hidden_size=32):
        self.parent = parent
        self.differential = differential
        self.batch_size = batch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = 3
        self.hidden_size = hidden_size
        self.projection_dim = 16
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.intermediate_size = 37
        self.is_training = True
        self.seq_length = (image_size // patch_size) ** 2 + 1

    def get_config(self):
        return DiffCLIPVisionConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            hidden_size=self.hidden_size,
            projection_dim=self.projection_dim,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            use_differential_attention=self.differential,
            attention_dropout=0.0 if self.differential else 0.1,
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), pixel_values

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}


class DiffCLIPTextModelTester:
    def __init__(self, parent, differential=True, batch_size=6, seq_length=7, hidden_size=32):
        self.parent = parent
        self.differential = differential
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.vocab_size = 99
        self.hidden_size = hidden_size
        self.projection_dim = 16
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.intermediate_size = 37
        self.max_position_embeddings = 64
        self.is_training = True

    def get_config(self):
        return DiffCLIPTextConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            projection_dim=self.projection_dim,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            use_differential_attention=self.differential,
            attention_dropout=0.0 if self.differential else 0.1,
            # small ids, so that the ConfigTester's reload with a 20-token vocabulary stays valid
            eos_token_id=2,
            bos_token_id=1,
            pad_token_id=0,
        )

    def prepare_config_and_inputs(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        # right padding only (the CLIP tokenizer's; the causal mask makes it exact), as CLIP's tests build it
        lengths = torch.randint(2, self.seq_length + 1, (self.batch_size,))
        attention_mask = (torch.arange(self.seq_length)[None] < lengths[:, None]).long()
        return self.get_config(), input_ids, attention_mask

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, attention_mask = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids, "attention_mask": attention_mask}


class DiffCLIPModelTester:
    def __init__(self, parent, differential=True):
        self.parent = parent
        self.text_model_tester = DiffCLIPTextModelTester(parent, differential)
        self.vision_model_tester = DiffCLIPVisionModelTester(parent, differential)
        self.batch_size = self.text_model_tester.batch_size
        self.is_training = True

    def get_config(self):
        return DiffCLIPConfig.from_text_vision_configs(
            self.text_model_tester.get_config(), self.vision_model_tester.get_config(), projection_dim=16
        )

    def prepare_config_and_inputs_for_common(self):
        _, input_ids, attention_mask = self.text_model_tester.prepare_config_and_inputs()
        _, pixel_values = self.vision_model_tester.prepare_config_and_inputs()
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}
        return self.get_config(), {**inputs, "return_loss": True}


# Tolerances of the eager/sdpa comparison, transformers' defaults except in half precision: differential attention
# subtracts two maps, and the eager kernel rounds each map and its product with V to the half dtype before the
# subtraction while the CPU sdpa path combines the maps in float32, so the two differ by the cancellation error
# (float16: 3e-3 mean relative difference of logits_per_text seen, against 5e-3 tolerances; bfloat16, 8 bits of
# mantissa: up to 4e-2 seen over random inputs, both kernels equally far from float32). The inputs are seeded.
_TOLERANCES = {torch.float32: (1e-6, 1e-4), torch.float16: (1e-2, 1e-2), torch.bfloat16: (5e-2, 5e-2)}
DIFFERENTIAL_ATOLS = {(d, k, t): v[0] for d in ("cpu", "cuda") for k in (False, True) for t, v in _TOLERANCES.items()}
DIFFERENTIAL_RTOLS = {(d, k, t): v[1] for d in ("cpu", "cuda") for k in (False, True) for t, v in _TOLERANCES.items()}


class _DifferentialTolerances:
    @parameterized.expand(common.TEST_EAGER_MATCHES_SDPA_INFERENCE_PARAMETERIZATION)
    def test_eager_matches_sdpa_inference(self, name, dtype, padding_side, use_mask, output_attentions, kernels):
        common.global_rng.seed(0)  # transformers' input generator is unseeded: the same inputs on every run
        torch.manual_seed(0)
        common._test_eager_matches_sdpa_inference(
            self, name, dtype, padding_side, use_mask, output_attentions, kernels,
            atols=DIFFERENTIAL_ATOLS, rtols=DIFFERENTIAL_RTOLS,
        )  # fmt: skip


# ------------------------------------------------------------------------------------------------------ test classes
# One mixin per kind of model, then a TestCase per attention mode (only the TestCases are collected).


class _VisionTests(ModelTesterMixin):
    test_pruning = test_head_masking = False  # transformers 4.x (see "older releases" above)
    all_model_classes = (DiffCLIPVisionModel, DiffCLIPVisionModelWithProjection)
    differential = True
    test_resize_embeddings = False

    def setUp(self):
        self.model_tester = DiffCLIPVisionModelTester(self, self.differential)
        self.config_tester = DiffCLIPConfigTester(
            self, config_class=DiffCLIPVisionConfig, has_text_modality=False, hidden_size=36, num_attention_heads=4
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model_get_set_embeddings(self):
        """As CLIP's: the vision towers' input embedding is the patch convolution, and they have no output one."""
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), torch.nn.Conv2d)
            self.assertIsNone(model.get_output_embeddings())


class _TextTests(ModelTesterMixin):
    test_pruning = test_head_masking = False  # transformers 4.x (see "older releases" above)
    all_model_classes = (DiffCLIPTextModel, DiffCLIPTextModelWithProjection)
    differential = True

    def setUp(self):
        self.model_tester = DiffCLIPTextModelTester(self, self.differential)
        self.config_tester = DiffCLIPConfigTester(
            self, config_class=DiffCLIPTextConfig, hidden_size=36, num_attention_heads=4
        )

    def test_config(self):
        self.config_tester.run_common_tests()


class _DualTests(ModelTesterMixin):
    test_pruning = test_head_masking = False  # transformers 4.x (see "older releases" above)
    all_model_classes = (DiffCLIPModel,)
    additional_model_inputs = ["pixel_values"]  # the main input is input_ids; the dual encoder needs both
    differential = True
    test_resize_embeddings = False
    test_attention_outputs = False
    _is_composite = True

    def setUp(self):
        self.model_tester = DiffCLIPModelTester(self, self.differential)
        self.config_tester = DiffCLIPConfigTester(
            self,
            config_class=DiffCLIPConfig,
            has_text_modality=False,
            common_properties=["projection_dim", "logit_scale_init_value"],
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_sdpa_can_dispatch_composite_models(self):
        """As CLIP's override: the towers are modules of the dual encoder (not sub-models), so the test reads their
        configs; every attention layer follows what was requested at load time."""
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        model = DiffCLIPModel(config)
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            for requested, expected in ((None, "sdpa"), ("eager", "eager"), ("sdpa", "sdpa")):
                kwargs = {} if requested is None else {"attn_implementation": requested}
                loaded = DiffCLIPModel.from_pretrained(folder, **kwargs)
                self.assertEqual(loaded.config._attn_implementation, expected)
                for tower in (loaded.text_model, loaded.vision_model):
                    self.assertEqual(tower.config._attn_implementation, expected)
                    for layer in tower.encoder.layers:
                        self.assertEqual(layer.self_attn.config._attn_implementation, expected)


@with_skips(SKIPS_ALL, SKIPS_TOWERS, SKIPS_DIFFERENTIAL)
class DiffCLIPVisionModelTest(_DifferentialTolerances, _VisionTests, unittest.TestCase):
    pass


@with_skips(SKIPS_ALL, SKIPS_TOWERS, SKIPS_TEXT, SKIPS_DIFFERENTIAL, patterns=[LEFT_PADDING])
class DiffCLIPTextModelTest(_DifferentialTolerances, _TextTests, unittest.TestCase):
    pass


@with_skips(SKIPS_ALL, SKIPS_DUAL, patterns=[LEFT_PADDING])
class DiffCLIPModelTest(_DifferentialTolerances, _DualTests, unittest.TestCase):
    pass


@with_skips(SKIPS_ALL, SKIPS_TOWERS, patterns=[HALF_PRECISION_STANDARD])
class DiffCLIPVisionModelStandardAttentionTest(_VisionTests, unittest.TestCase):
    differential = False


@with_skips(SKIPS_ALL, SKIPS_TOWERS, SKIPS_TEXT, patterns=[LEFT_PADDING, HALF_PRECISION_STANDARD])
class DiffCLIPTextModelStandardAttentionTest(_TextTests, unittest.TestCase):
    differential = False


@with_skips(SKIPS_ALL, SKIPS_DUAL, patterns=[LEFT_PADDING, HALF_PRECISION_STANDARD])
class DiffCLIPModelStandardAttentionTest(_DualTests, unittest.TestCase):
    differential = False
