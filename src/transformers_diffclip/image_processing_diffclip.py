# Copyright 2026 The transformers-diffclip authors. Licensed under the Apache License, Version 2.0.
"""Image processor of DiffCLIP: transformers' PIL-backed CLIP image processor, set up as the original evaluation
transform.

The original evaluation resizes the shorter side to 224 with PIL's bilinear filter, center-crops 224×224 and
normalises with the ImageNet mean and standard deviation (not OpenAI CLIP's). transformers' PIL backend resizes
exactly as torchvision does on PIL images, but its center crop floors the offset `(size - 224) / 2` while
torchvision rounds it half to even; `DiffCLIPImageProcessor` overrides the crop so both agree to the pixel.

Remote code: imports only numpy (a transformers dependency), the standard library and transformers, and works with
transformers 4.57 (whose PIL-backed class is `CLIPImageProcessor`) and 5.x (`CLIPImageProcessorPil`).
"""

import numpy as np


try:  # transformers 5.x: the PIL/NumPy backend has its own class
    from transformers import CLIPImageProcessorPil as _CLIPPilImageProcessor

    _SIZE_IS_DICT = False
except ImportError:  # transformers 4.x: the slow CLIP image processor is the PIL/NumPy one
    from transformers import CLIPImageProcessor as _CLIPPilImageProcessor

    _SIZE_IS_DICT = True

from transformers.image_utils import ChannelDimension, PILImageResampling, infer_channel_dimension_format


IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def center_crop_offsets(height: int, width: int, crop_height: int, crop_width: int) -> tuple[int, int]:
    """Top-left corner of a centered crop, rounded as torchvision rounds it (`round`, i.e. half to even)."""
    return int(round((height - crop_height) / 2.0)), int(round((width - crop_width) / 2.0))


def _crop_array(image: np.ndarray, crop_height: int, crop_width: int, channels_first: bool) -> np.ndarray:
    height, width = image.shape[-2:] if channels_first else image.shape[:2]
    if crop_height > height or crop_width > width:
        raise ValueError(
            f"Cannot center-crop {crop_height}x{crop_width} out of a {height}x{width} image; resize it first "
            "(the processor's `size['shortest_edge']` must be at least the crop size)."
        )
    top, left = center_crop_offsets(height, width, crop_height, crop_width)
    if channels_first:
        return image[..., top : top + crop_height, left : left + crop_width]
    return image[top : top + crop_height, left : left + crop_width, ...]


class DiffCLIPImageProcessor(_CLIPPilImageProcessor):
    r"""CLIP image processor with DiffCLIP's evaluation settings: bilinear resize of the shorter side to 224, a
    224×224 center crop with torchvision's offset rounding, RGB, [0, 1] scaling, ImageNet normalisation."""

    model_input_names = ["pixel_values"]

    def __init__(self, **kwargs):
        kwargs.setdefault("size", {"shortest_edge": 224})
        kwargs.setdefault("crop_size", {"height": 224, "width": 224})
        kwargs.setdefault("resample", PILImageResampling.BILINEAR)
        kwargs.setdefault("image_mean", IMAGENET_MEAN)
        kwargs.setdefault("image_std", IMAGENET_STD)
        kwargs.setdefault("do_resize", True)
        kwargs.setdefault("do_center_crop", True)
        kwargs.setdefault("do_rescale", True)
        kwargs.setdefault("do_normalize", True)
        kwargs.setdefault("do_convert_rgb", True)
        super().__init__(**kwargs)

    def center_crop(self, image: np.ndarray, size, data_format=None, input_data_format=None, **kwargs) -> np.ndarray:
        if isinstance(size, dict):
            crop_height, crop_width = size["height"], size["width"]
        else:  # transformers 5 passes a SizeDict
            crop_height, crop_width = size.height, size.width
        if _SIZE_IS_DICT:
            if input_data_format is None:
                input_data_format = infer_channel_dimension_format(image)
            channels_first = input_data_format == ChannelDimension.FIRST
        else:  # transformers 5's PIL backend works on channels-first arrays
            channels_first = True
        cropped = _crop_array(image, crop_height, crop_width, channels_first)
        if data_format is not None and _SIZE_IS_DICT:
            from transformers.image_transforms import to_channel_dimension_format

            cropped = to_channel_dimension_format(cropped, data_format, input_data_format)
        return cropped


__all__ = ["DiffCLIPImageProcessor", "center_crop_offsets"]
