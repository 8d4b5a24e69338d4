"""Extraction stage: every tapped layer of every network, one forward pass per batch, into Zarr on the store.

    python -m jobs.extract run.yaml        (or as part of ``python -m jobs.pipeline``)

On Ray it runs the actor pool of ``cluster.extract`` (one actor per GPU, CPU decode tasks with backpressure);
with ``--no-ray`` the same units run in this process. Finished units (markers) are skipped; with none left,
Ray is not started at all.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from jobs.runner import StageContext, main

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict[str, Any]:
    """Run the stage; returns its counts for run.json."""
    from vsp.data.images import build_manifest
    from vsp.extract.features import FeatureStore

    cfg = ctx.config
    records = build_manifest(cfg.images)
    concepts = ctx.norms().concepts if cfg.norms is not None and cfg.extract.only_norm_concepts else None
    config = cfg.extraction_config()
    progress = ctx.progress("extract", "units", "images")
    if ctx.use_ray:
        from cluster.extract import run_extraction_ray

        summary = run_extraction_ray(
            ctx.store.uri, records, config, concepts, n_actors=cfg.extract.actors,
            batch_size=cfg.extract.batch_size, progress=progress, connect=ctx.connect,
        )  # fmt: skip
    else:
        from vsp.extract.stage import run_extraction_local

        summary = run_extraction_local(
            ctx.store, records, config, concepts, batch_size=cfg.extract.batch_size, progress=progress
        )
    manifest = FeatureStore(ctx.store).manifest() or {}
    ctx.record.set_weights_identity(manifest.get("identity", {}).get("weights_identity", {}))
    log.info("%s", summary.line())
    return {
        "units_total": summary.units_total,
        "units_run": summary.units_run,
        "units_skipped": summary.units_skipped,
        "images": summary.images,
        "unreadable_images": summary.skipped_images,
        "summary": summary.line(),
    }


if __name__ == "__main__":
    sys.exit(main("extract"))
