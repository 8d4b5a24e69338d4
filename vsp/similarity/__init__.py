"""Word similarity: MEN / SimLex-999 Spearman (`score`) and the stage (`stage`, Table 3).

``vsp.similarity`` was one module in release 0.1; its names still resolve here (from ``vsp.similarity.score``) for
one release.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """The 0.1 names of ``vsp.similarity``, now in ``vsp.similarity.score``."""
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    module = importlib.import_module("vsp.similarity.score")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'vsp.similarity' has no attribute {name!r}") from None
