"""One stage of a run: ``python -m jobs.decode run.yaml`` runs ``vsp.pipeline.get("decode")``."""

import sys

from jobs.runner import main

if __name__ == "__main__":
    sys.exit(main("decode"))
