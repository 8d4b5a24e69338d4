"""One entry point per pipeline stage, plus the whole pipeline, each driven by one run configuration.

    python -m jobs.pipeline run.yaml          # every stage the configuration lists, in pipeline order
    python -m jobs.extract run.yaml           # one stage
    ray job submit --address http://HEAD:8265 --working-dir . -- python -m jobs.pipeline run.yaml

``STAGES`` maps a stage name to the module whose ``run(ctx)`` runs it; a stage the configuration names but
that is not built yet is skipped with a logged message. Adding a stage is one line here plus its module.
"""

STAGES: dict[str, str] = {
    "extract": "jobs.extract",
    "decode": "jobs.decode",
    "meta": "jobs.meta",
    "map": "jobs.map",
    "similarity": "jobs.similarity",
    "report": "jobs.report",
}
