"""The report as a stage: rebuilt on every run from what the stages' markers cover; binds no identity.

It runs in the driver (reading results; the explanations are a few forward passes) and writes a local file,
``report.out`` (default ``<store>/report.html`` for a local store); ``report/done.json`` on the store records
where it went and the files it wrote, for ``vsp status``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from vsp.io.store import Store
from vsp.report.build import REPORT_MARKER, ReportConfig, report_files_ok, write_report
from vsp.stage import Stage, StageContext, pick_device

if TYPE_CHECKING:
    from vsp.config import RunConfig

log = logging.getLogger(__name__)


class ReportStage(Stage):
    """One self-contained HTML report of the run, its tables as CSV, and every stage's marked outputs."""

    name = "report"
    root = "report"
    Config = ReportConfig
    needs = ()
    unit_word = "report"
    marker_prefixes = ()

    def identity(self, run: RunConfig) -> dict[str, Any]:
        """Nothing: the report is rebuilt from what the store holds, so any settings may change."""
        return {}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        """Write the report; counts for run.json."""
        config = ctx.settings(self.name)
        result = write_report(
            ctx.store,
            config.out,
            norms=ctx.norms() if ctx.config.norms is not None else None,
            explain_images=config.explain_images,
            explain_model=config.model,
            explain_layers=config.layers,
            top=config.top,
            device=pick_device(config.device),
            progress=lambda msg: log.info("report: %s", msg),
        )
        ok = [k for k, v in result.sections.items() if v == "ok"]
        return {
            "path": str(result.path),
            "tables_dir": str(result.tables_dir),
            "sections_with_results": len(ok),
            "sections": dict(result.sections),
            "csv": len(result.csv),
            "summary": result.line(),
        }  # write_report has recorded report/done.json (its files with sizes and sha256) after writing them

    def progress(self, store: Store) -> dict[str, Any] | None:
        """Done when its marker exists and the files it lists are there (on this machine)."""
        if not store.exists(REPORT_MARKER):
            return None
        ok = report_files_ok(store.read_json(REPORT_MARKER))
        return {"what": "report", "done": int(ok), "total": 1, "complete": ok}

    def outputs(self, store: Store) -> list[str]:
        """The report's marker (its files are local paths, listed in it)."""
        return [REPORT_MARKER] if store.exists(REPORT_MARKER) else []

    def has_results(self, store: Store) -> bool:
        """Whether a report was recorded on the prefix."""
        return store.exists(REPORT_MARKER)
