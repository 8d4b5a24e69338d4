"""The report, above every stage: the paper's numbers (`paper`), the tables and HTML (`build`), the
appendix's per-image predictions (`explain`). It reads each stage through that stage's readers.

``vsp.report`` was one module in release 0.1; its names still resolve here (from ``vsp.report.build``) for
one release.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """The 0.1 names of ``vsp.report``, now in ``vsp.report.build``."""
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    module = importlib.import_module("vsp.report.build")
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'vsp.report' has no attribute {name!r}") from None
