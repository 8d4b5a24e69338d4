"""Decoding-grid stage: every property from every layer, batched probes per layer, Parquet + Figures 1-2.

    python -m jobs.decode run.yaml         (or as part of ``python -m jobs.pipeline``)

On Ray it fans layers out as tasks (``cluster.decode``); with ``--no-ray`` they run in this process. Layers
whose marker exists are skipped (with none left, Ray is not started); the aggregation and figures are
rebuilt from the per-layer files.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from jobs.runner import StageContext, main

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict[str, Any]:
    """Run the stage; returns its counts for run.json."""
    cfg = ctx.config
    norms = ctx.norms()
    config = cfg.decode_config()
    progress = ctx.progress("decode", "layers", "fits")
    if ctx.use_ray:
        from cluster.decode import run_decode_ray

        summary = run_decode_ray(
            ctx.store.uri, norms, config, layers_per_task=cfg.decode.layers_per_task, progress=progress,
            connect=ctx.connect,
        )  # fmt: skip
    else:
        from vsp.decode.stage import run_decode_local

        summary = run_decode_local(ctx.store, norms, config, progress=progress)
    log.info("%s", summary.line())
    return {
        "layers_total": summary.units_total,
        "layers_run": summary.units_run,
        "layers_skipped": summary.units_total - summary.units_run,
        "fits": summary.fits,
        "outputs": list(summary.outputs),
        "summary": summary.line(),
    }


if __name__ == "__main__":
    sys.exit(main("decode"))
