"""Resumable training checkpoints.

A checkpoint holds the model, optimiser, scheduler position, epoch, history, RNG states and the
config. It is written atomically every epoch (a crash mid-write leaves the previous one intact)
and read back with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects:
loading a checkpoint from elsewhere can never execute code.
"""

from __future__ import annotations

import io
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lungseg.atomic import atomic_write_bytes
from lungseg.errors import InvalidInputError


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely; anything but tensors and plain containers is refused."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(path, "checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InvalidInputError(
            path, f"refused: the checkpoint holds objects other than tensors ({err})"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise InvalidInputError(path, f"not a readable checkpoint ({err})") from err


def rng_state() -> dict[str, Any]:
    """Every RNG a run draws from, in a form ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0)
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
