"""One stage of a run: ``python -m jobs.similarity run.yaml`` runs ``vsp.pipeline.get("similarity")``."""

import sys

from jobs.runner import main

if __name__ == "__main__":
    sys.exit(main("similarity"))
