"""One stage of a run: ``python -m jobs.map run.yaml`` runs ``vsp.pipeline.get("map")``."""

import sys

from jobs.runner import main

if __name__ == "__main__":
    sys.exit(main("map"))
