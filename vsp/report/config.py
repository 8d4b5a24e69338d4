"""The report's settings (`vsp report`, the run file's ``report:`` section): the only declaration of them."""

from __future__ import annotations

from dataclasses import dataclass

from vsp.config import setting


@dataclass(frozen=True)
class ReportConfig:
    """The HTML report: where it goes (a local path) and its explanations.

    The report binds no identity (it is rebuilt from what the store holds); ``out`` and ``device`` are marked
    tuning all the same.
    """

    # default: <store>/report.html (local store), else report.html by the run file (vsp.config's hook)
    out: str | None = setting(None, identity=False, doc="the HTML file to write (a local path)")
    explain_images: int = setting(3, minimum=0, doc="explanations to show (0: none)")
    model: str | None = setting(None, doc="network for the explanations (default: resnet34 or the first)")
    layers: str | None = None  # 0-based tap indices or module names, comma-separated (vsp.config's hook)
    top: int = setting(8, minimum=1, doc="properties per layer in the explanations")
    device: str = setting("cpu", identity=False, choices=("cpu", "cuda"))
