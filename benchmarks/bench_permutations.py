"""Permutation nulls for decoding (vsp.decode.permutation) vs. the same nulls as a loop of scikit-learn fits.

The issue's target: 1,000 label permutations x 390 properties x 5 folds for one 512-wide layer of the real
CSLB labels (1.95 M logistic-regression fits) in <= 5 minutes on 2 CPU cores. Timing all of it takes that
long, so this measures ``--permutations`` of them (default 8, i.e. 15,600 fits) and reports the rate and the
projected time for 1,000; beside it, in the same run and on the same cores, the same work for a few
permutations of ``--sk-properties`` properties as a loop of ``LogisticRegression(class_weight="balanced")``
fits (one joblib task per property), projected the same way, and the ratio of the two.

    python benchmarks/bench_permutations.py                       # CPU, 8 permutations, 512-wide
    python benchmarks/bench_permutations.py --device cuda --permutations 100
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_decode.py

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import torch  # noqa: E402
from bench_decode import label_correlated_features, sklearn_loop  # noqa: E402

from vsp.data.norms import load_cslb  # noqa: E402
from vsp.decode.permutation import permutation_null, permuted_labels  # noqa: E402
from vsp.stats import benjamini_hochberg, permutation_pvalues  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--norms", default=str(REPO.parent / "shared" / "data" / "cslb" / "norms.dat"))
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--permutations", type=int, default=8)
    ap.add_argument("--target", type=int, default=1000, help="permutations the projection is for")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sk-properties", type=int, default=40, help="properties in the scikit-learn loop")
    ap.add_argument("--sk-permutations", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.cores)

    norms = load_cslb(args.norms)
    labels = norms.binary
    n, P = labels.shape
    X = label_correlated_features(labels, args.width, seed=0)
    print(f"labels: {n} concepts x {P} properties (CSLB); features: {n} x {args.width}; folds {args.folds}")
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, cores {args.cores}")

    permutation_null(X[:, :16], labels[:, :8], 1, folds=args.folds, device=args.device)  # warm-up
    t0 = time.perf_counter()
    observed, null = permutation_null(X, labels, args.permutations, folds=args.folds, device=args.device)
    ours = time.perf_counter() - t0
    fits = (args.permutations + 1) * P * args.folds
    rate = fits / ours
    target_fits = args.target * P * args.folds
    print(
        f"ours: {args.permutations} permutations + observed = {fits:,} fits in {ours:.1f} s "
        f"({rate:,.0f} fits/s); projected {args.target} x {P} x {args.folds} = {target_fits:,} fits: "
        f"{target_fits / rate / 60:.1f} min"
    )
    p = permutation_pvalues(observed, null)
    print(
        f"  p-values: min {p.min():.3f} (= 1/(1+B)); decodable at FDR 0.05: "
        f"{int((benjamini_hochberg(p) <= 0.05).sum())} of {P} (no p-value is below 1/(1+B), "
        f"B={args.permutations})"
    )

    sk_props = min(args.sk_properties, P)
    perms = permuted_labels(labels[:, :sk_props], args.sk_permutations, seed=0)
    sklearn_loop(X, labels[:, :2], args.folds, 0, 1.0, args.cores)  # start the workers
    t0 = time.perf_counter()
    for b in range(args.sk_permutations):
        sklearn_loop(X, perms[b], args.folds, 0, 1.0, args.cores)
    sk = time.perf_counter() - t0
    sk_fits = args.sk_permutations * sk_props * args.folds
    sk_rate = sk_fits / sk
    print(
        f"scikit-learn loop: {sk_fits:,} fits in {sk:.1f} s ({sk_rate:,.0f} fits/s); projected "
        f"{target_fits:,} fits: {target_fits / sk_rate / 60:.1f} min"
    )
    print(f"ratio (ours / scikit-learn, fits per second, same run, same cores): {rate / sk_rate:.1f}x")


if __name__ == "__main__":
    main()
