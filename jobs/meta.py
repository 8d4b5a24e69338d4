"""Meta-embedding stage: penultimate, SVD-meta, 1ToN-meta, text and multimodal embeddings; their decodability.

    python -m jobs.meta run.yaml           (or as part of ``python -m jobs.pipeline``)

Builds every embedding of the ``meta`` section (``vsp meta``), then, when the configuration has norms, decodes
every property from each (Tables 1 and 4). On Ray the stage runs as one task (with a GPU when the cluster has
one: 1ToN trains on it); with ``--no-ray`` in this process. Embeddings whose marker exists are skipped; when
every planned embedding (and, with norms, its decodability) is already done, the stage runs in the driver
and Ray is not started.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from jobs.runner import StageContext, main

log = logging.getLogger(__name__)


def build(store_uri: str, config, norms, decode_config, threads: int | None, progress=None) -> dict[str, Any]:
    """Build the embeddings and (with norms) their decodability on ``store_uri``; the stage's counts."""
    import torch

    from vsp.io.store import open_store
    from vsp.meta.stage import (
        DECODABILITY_TXT,
        decodability_table,
        paper_check,
        run_decodability_local,
        run_meta_local,
        write_text,
    )

    st = open_store(store_uri)
    summary = run_meta_local(st, config, norms, progress=progress, threads=threads)
    counts: dict[str, Any] = {
        "embeddings_total": summary.total,
        "embeddings_built": len(summary.built),
        "embeddings_skipped": summary.total - len(summary.built),
        "summary": summary.line(),
    }
    if summary.coverage:
        counts["text_coverage"] = summary.coverage
    if norms is None:
        counts["decodability"] = "skipped: no norms in the configuration"
        return counts
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dec = run_decodability_local(st, norms, decode_config, device=device, threads=threads)
    write_text(st, DECODABILITY_TXT, decodability_table(st, paper_check(st, norms)))
    counts.update(
        decoded_total=dec.total, decoded_run=dec.run, decoded_skipped=dec.total - dec.run, fits=dec.fits,
        decodability=dec.line(),
    )  # fmt: skip
    return counts


def finished(store, with_decodability: bool) -> bool:
    """Whether a previous run left nothing to build: every planned embedding done (and decoded, with norms).

    Only a shortcut to skip Ray: the stage still runs (in the driver), checking its manifest and markers.
    """
    from vsp.meta.stage import (
        DECODABILITY,
        DECODE_MANIFEST,
        MANIFEST,
        built_embeddings,
        decoded_embeddings,
        embedding_names,
    )

    if not store.exists(MANIFEST):
        return False
    plan = [e["name"] for e in store.read_json(MANIFEST).get("plan", [])]
    if not plan or built_embeddings(store, plan) != set(plan):
        return False
    if not with_decodability:
        return True
    if not (store.exists(DECODE_MANIFEST) and store.exists(DECODABILITY)):
        return False
    names = embedding_names(store)
    return decoded_embeddings(store, names) == set(names)


def run(ctx: StageContext) -> dict[str, Any]:
    """Run the stage; returns its counts for run.json."""
    cfg = ctx.config
    norms = ctx.norms() if cfg.norms is not None else None
    args = (ctx.store.uri, cfg.meta_config(), norms, cfg.meta_decode_config(), cfg.meta.threads)
    if ctx.use_ray and not finished(ctx.store, norms is not None):
        import ray

        from cluster.waiting import get

        ctx.connect()
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        counts = get(ray.remote(num_gpus=gpus)(build).remote(*args))  # waits in slices: SIGTERM stays heard
    else:
        counts = build(*args, progress=ctx.progress("meta", "embeddings", "embeddings"))
    log.info("%s", counts["summary"])
    if "fits" in counts:
        log.info("%s", counts["decodability"])
    return counts


if __name__ == "__main__":
    sys.exit(main("meta"))
