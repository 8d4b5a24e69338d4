"""One stage of a run: ``python -m jobs.report run.yaml`` runs ``vsp.pipeline.get("report")``."""

import sys

from jobs.runner import main

if __name__ == "__main__":
    sys.exit(main("report"))
