"""Zero-shot mapping stage: every stored embedding to the CSLB property vectors (kNN, ridge, MLP; Table 2).

    python -m jobs.map run.yaml            (or as part of ``python -m jobs.pipeline``)

On Ray the grid's units run as tasks (``cluster.mapping``: one per MLP fold, one per embedding and repeat for
kNN and ridge); with ``--no-ray`` in this process. Units whose marker exists are skipped (with none left, Ray
is not started); Table 2 is rebuilt.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from jobs.runner import StageContext, main

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict[str, Any]:
    """Run the stage; returns its counts for run.json."""
    from vsp.meta.stage import paper_check

    norms = ctx.norms()
    config = ctx.config.mapping_config()
    check = paper_check(ctx.store, norms)
    progress = ctx.progress("map", "units", "folds")
    if ctx.use_ray:
        from cluster.mapping import run_mapping_ray

        summary = run_mapping_ray(
            ctx.store.uri, norms, config, check=check, progress=progress, connect=ctx.connect
        )
    else:
        import torch

        from vsp.mapping.stage import run_mapping_local

        device = "cuda" if torch.cuda.is_available() else "cpu"
        summary = run_mapping_local(ctx.store, norms, config, device=device, check=check, progress=progress)
    log.info("%s", summary.line())
    return {
        "units_total": summary.units_total,
        "units_run": summary.units_run,
        "units_skipped": summary.units_total - summary.units_run,
        "folds": summary.folds,
        "outputs": list(summary.outputs),
        "summary": summary.line(),
    }


if __name__ == "__main__":
    sys.exit(main("map"))
