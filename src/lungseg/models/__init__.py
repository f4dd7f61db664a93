"""The model family: a U-Net, Oktay's Attention U-Net and MSAG-UNet, built by name.

>>> from lungseg.models import create_model, list_models
>>> model = create_model("msag_unet_cpu")
>>> model.config["name"], model.stride
('msag_unet_cpu', 16)
"""

from __future__ import annotations

from lungseg.models import unet as _unet  # noqa: F401  (registers the family)
from lungseg.models.registry import build_from_config, create_model, list_models
from lungseg.models.unet import pad_to_stride

__all__ = ["build_from_config", "create_model", "list_models", "pad_to_stride"]
