"""``lungseg serve``: the REST API and the web page (needs the ``serve`` extra: FastAPI, uvicorn).

:func:`create_app` builds the app from one :class:`ServeSettings` (the weights, their device,
precision and backend, and the limits); ``lungseg serve`` builds that object from its flags and
runs the app with uvicorn. Example::

    from lungseg.serve import ServeSettings, create_app
    app = create_app(ServeSettings(device="cpu", threads=2))

See :mod:`lungseg.serve.app` for the endpoints and :mod:`lungseg.serve.settings` for the
settings. FastAPI is imported on first use, so the settings import without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lungseg.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]

if TYPE_CHECKING:
    from lungseg.serve.app import create_app


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from lungseg.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'lungseg.serve' has no attribute {name!r}")
