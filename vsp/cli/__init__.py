"""The `vsp` command: every pipeline stage, with real examples in --help.

One module per command group; each registers itself on the shared Typer ``app``. Ray is imported only
inside the commands that fan work out (through ``cluster``), so `vsp norms` and `vsp images validate` start
instantly and the compute core stays Ray-free.
"""

from vsp.cli import cluster, decode, demo, explain, extract, images, mapping, meta, norms, report, similarity  # noqa: F401  (registers the commands)
from vsp.cli.app import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry point
    """Console entry point."""
    app()
