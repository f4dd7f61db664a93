"""lungseg: chest X-ray lung segmentation with MSAG-UNet.

The public surface is small on purpose; heavy modules load on first use so that
``import lungseg`` stays fast and side-effect free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "LungsegError", "Segmenter", "create_model", "list_models"]

from lungseg.errors import LungsegError

if TYPE_CHECKING:
    from lungseg.inference import Segmenter
    from lungseg.models import create_model, list_models


def __getattr__(name: str) -> Any:
    # Lazy: importing torch-heavy model code only when someone asks for it.
    if name in ("create_model", "list_models"):
        from lungseg import models

        return getattr(models, name)
    if name == "Segmenter":
        from lungseg.inference import Segmenter

        return Segmenter
    raise AttributeError(f"module 'lungseg' has no attribute {name!r}")
