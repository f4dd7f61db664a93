"""Models by name: ``@register_model``, ``create_model``, ``list_models``, ``build_from_config``.

A registered function is a preset: it fills in default constructor arguments and lets the caller
override any of them. Every model it returns carries ``model.config``, the complete, JSON-ready
argument dict (including ``name``), so a checkpoint that stores the config can rebuild the exact
architecture with :func:`build_from_config` - no class names or pickles involved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from lungseg.errors import LungsegError

ModelFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}

# Arguments added after weights files were first shipped, with the value a config that lacks them
# was written with: such a file must rebuild the architecture it was trained as, not today's
# preset default.
_ADDED_ARGUMENTS: dict[str, Any] = {"stem_stride": 1}


def register_model(factory: ModelFactory) -> ModelFactory:
    """Register ``factory`` under its function name (timm-style decorator)."""
    name = factory.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = factory
    return factory


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with its defaults, any of which ``overrides`` replaces.

    Raises:
        LungsegError: ``name`` is not registered (the message lists the valid names); the
            factory raises it too for an override that is not one of its arguments.
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        raise LungsegError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return factory(**overrides)


def build_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from its ``model.config`` (e.g. read from a checkpoint's JSON)."""
    if "name" not in config:
        raise LungsegError("model config has no 'name'; expected the dict saved from model.config")
    args = {**_ADDED_ARGUMENTS, **config}
    return create_model(args.pop("name"), **args)
