"""Job entry points, each driven by one run configuration, all through the one runner (``jobs.runner``).

    python -m jobs.pipeline run.yaml          # every stage the configuration lists, in pipeline order
    python -m jobs.extract run.yaml           # one stage
    ray job submit --address http://HEAD:8265 --working-dir . -- python -m jobs.pipeline run.yaml

The stages themselves are declared in their rooms and listed once in ``vsp.pipeline``.
"""
