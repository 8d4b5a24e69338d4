"""One stage of a run: ``python -m jobs.extract run.yaml`` runs ``vsp.pipeline.get("extract")``."""

import sys

from jobs.runner import main

if __name__ == "__main__":
    sys.exit(main("extract"))
