"""Feature extraction: the networks and their layer taps (`networks`), pooling hooks and per-concept
aggregation (`hooks`), the Zarr feature layout (`features`) and the stage (`stage`).

``vsp.extract`` was one module in release 0.1; its names still resolve here (from ``vsp.extract.hooks``) for
one release.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """The 0.1 names of ``vsp.extract``, now in ``vsp.extract.hooks``."""
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    module = importlib.import_module("vsp.extract.hooks")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'vsp.extract' has no attribute {name!r}") from None
