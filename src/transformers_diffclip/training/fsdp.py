# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""FSDP's shardable logit scale: FSDP refuses 0-dimensional parameters, so the scalar is stored as a 1-element vector
while state dicts keep the scalar."""

import torch

from ..modeling_diffclip import DiffCLIPModel


def _logit_scale_as_scalar(module, state_dict, prefix, local_metadata):
    key = prefix + "logit_scale"
    if key in state_dict and state_dict[key].shape == (1,):
        state_dict[key] = state_dict[key].reshape(())


def _logit_scale_as_vector(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
    key = prefix + "logit_scale"
    if key in state_dict and state_dict[key].dim() == 0:
        state_dict[key] = state_dict[key].reshape(1)


def make_logit_scale_shardable(model: DiffCLIPModel) -> DiffCLIPModel:
    """Store `model.logit_scale` as a 1-element vector instead of a scalar, in place, for FSDP.

    FSDP (1 and 2) refuses 0-dimensional parameters ("Change logit_scale to a 1D tensor with numel equal to 1").
    The forward broadcasts either shape the same way. State dicts keep the scalar: `state_dict()` (and so
    `save_pretrained` and Trainer checkpoints) writes it as a scalar and `load_state_dict` accepts a scalar, so saved
    folders load into an ordinary `DiffCLIPModel`. [`DiffCLIPTrainer`] calls this when FSDP is enabled.
    """
    parameter = model.logit_scale
    if parameter.dim() == 0:
        model.logit_scale = torch.nn.Parameter(parameter.detach().reshape(1), requires_grad=parameter.requires_grad)
        model.register_state_dict_post_hook(_logit_scale_as_scalar)
        model.register_load_state_dict_pre_hook(_logit_scale_as_vector)
    return model
