"""The whole pipeline: every stage the run configuration lists, in pipeline order, one driver.

    python -m jobs.pipeline run.yaml [--stages extract,decode] [--address auto] [--no-ray]
    ray job submit --address http://HEAD:8265 --working-dir . -- python -m jobs.pipeline run.yaml

The stages and their order are ``vsp.pipeline``'s. A rerun after a failure or a stopped driver resumes:
finished units are skipped, stage by stage.
"""

from __future__ import annotations

import sys

from jobs.runner import main

if __name__ == "__main__":
    sys.exit(main(None))
