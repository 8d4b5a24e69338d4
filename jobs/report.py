"""Report stage: one self-contained HTML report of the run, with its tables as CSV (``vsp report``).

    python -m jobs.report run.yaml         (or as part of ``python -m jobs.pipeline``)

Runs in the driver (it reads the stages' results; the explanations are a few forward passes) and writes a
local file: ``report.out``, by default ``<store>/report.html`` for a local store. It is rebuilt on every run
(stages added since show up); ``report/done.json`` on the store records where it went, for ``vsp status``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from jobs.runner import StageContext, main

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict[str, Any]:
    """Run the stage; returns its counts for run.json."""
    from vsp.report.build import write_report

    cfg = ctx.config
    spec = cfg.report
    result = write_report(
        ctx.store,
        spec.out,  # type: ignore[arg-type] - always set by RunConfig
        norms=ctx.norms() if cfg.norms is not None else None,
        explain_images=spec.explain_images,
        explain_model=spec.model,
        explain_layers=spec.layers,
        top=spec.top,
        device=spec.device,
        progress=lambda msg: log.info("report: %s", msg),
    )
    ok = [k for k, v in result.sections.items() if v == "ok"]
    counts = {
        "path": str(result.path),
        "tables_dir": str(result.tables_dir),
        "sections_with_results": len(ok),
        "sections": dict(result.sections),
        "csv": len(result.csv),
        "summary": result.line(),
    }
    # write_report has recorded report/done.json (its files with sizes and sha256) after writing them
    log.info("%s", result.line())
    return counts


if __name__ == "__main__":
    sys.exit(main("report"))
