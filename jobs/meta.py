"""One stage of a run: ``python -m jobs.meta run.yaml`` runs ``vsp.pipeline.get("meta")``."""

import sys

from jobs.runner import main

if __name__ == "__main__":
    sys.exit(main("meta"))
