"""Word-similarity stage: MEN and SimLex-999 (or configured pair files) on every stored embedding (Table 3).

    python -m jobs.similarity run.yaml     (or as part of ``python -m jobs.pipeline``)

Cosine similarities and one Spearman rho per embedding and benchmark: seconds of work, so it runs in the
driver, with or without Ray. With no benchmark configured, MEN and SimLex-999 come from the shared data
folder ($VSP_SHARED_DATA, else ../shared/data), as ``vsp similarity`` does. A finished table is kept.
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
    from vsp.similarity.stage import run_similarity

    spec = ctx.config.similarity
    benchmarks = spec.benchmarks()
    norms = ctx.norms() if ctx.config.norms is not None else None
    patterns = list(spec.embeddings) if spec.embeddings else None
    summary = run_similarity(ctx.store, benchmarks, paper_check(ctx.store, norms), patterns)
    log.info("%s", summary.line())
    return {
        "embeddings": summary.embeddings,
        "pairs": dict(summary.pairs),
        "computed": summary.ran,
        "benchmark_files": benchmarks,
        "summary": summary.line(),
    }


if __name__ == "__main__":
    sys.exit(main("similarity"))
