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
import re
import warnings
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
        with warnings.catch_warnings():  # torch warns about the protocol of any foreign pickle
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InvalidInputError(path, _refusal(str(err))) from err
    except Exception as err:  # garbage makes torch's parsers raise anything (KeyError, ...)
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise InvalidInputError(path, f"not a readable checkpoint ({reason})") from err
    if not isinstance(state, dict):
        raise InvalidInputError(path, f"not a lungseg checkpoint (holds a {type(state).__name__})")
    return state


def _refusal(message: str) -> str:
    """One line saying what torch's weights-only unpickler refused.

    Its own message spans many lines and suggests ``weights_only=False``, exactly what must not
    be done with a file that tries to import ``os.system``.
    """
    name = re.search(r"GLOBAL (\S+)", message)
    if name:
        return (
            f"refused: it holds a pickled {name.group(1)}, which is not a tensor and could run "
            "code on load; nothing was executed"
        )
    detail = re.search(r"WeightsUnpickler error:\s*(.+)", message)
    reason = detail.group(1).strip() if detail else "not plain tensors"
    return f"refused: not a checkpoint of plain tensors ({reason}); nothing was executed"


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
