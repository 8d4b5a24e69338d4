"""Property decoding: the batched probe (`probe`), one layer's rows and the one per-class aggregation
(`grid`), and the stage (`stage`).

``vsp.decode`` was one module in release 0.1; its names still resolve here (from ``vsp.decode.grid``) for
one release.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """The 0.1 names of ``vsp.decode``, now in ``vsp.decode.grid``."""
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    module = importlib.import_module("vsp.decode.grid")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'vsp.decode' has no attribute {name!r}") from None
