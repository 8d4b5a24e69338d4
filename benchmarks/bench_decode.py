"""Batched probes (vsp.decode.probe) vs. a loop of scikit-learn fits: time and F1 agreement for one layer.

Labels: the real CSLB norms (638 concepts x 390 properties, ``vsp.data.norms.load_cslb``). Features:
synthetic, seeded, label-correlated, non-negative (softplus, like pooled ReLU activations), rows
L2-normalised, one matrix per width (default 64, 512, 2048).

(a) ours: ``vsp.decode.probe.probe_layer`` on all properties x 5 folds (StratifiedKFold folds,
    balanced-weight L2 logistic regression, per-fold F1), float32, ``torch.set_num_threads(cores)`` (the
    probe then splits the problems over that many threads, see ``workers``).
(b) baseline: the same work as a loop of ``LogisticRegression(class_weight="balanced", C=C)`` fits (default
    lbfgs, tol=1e-4), one joblib task per property (its StratifiedKFold split, 5 fits, predictions, F1) with
    ``n_jobs`` = core count.

Both run once untimed first (torch/MKL initialisation; joblib worker start-up), then interleaved on the same
cores: ours ``--repeats`` times, the scikit-learn loop ``max(1, repeats // 2)`` times; the best time of each
is reported (the machine may be shared: the minimum is the least disturbed run). Agreement is reported
against the timed scikit-learn loop (default tol) and, unless ``--no-tight``, against scikit-learn run to
tight tolerance (tol=1e-10, max_iter=10000: the optimum itself, the reference the probe must reproduce); the
tight reference is not timed.

    python benchmarks/bench_decode.py                          # widths 64, 512, 2048; all 390 properties
    python benchmarks/bench_decode.py --widths 512 --properties 60 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

# On a shared machine, OpenMP threads that spin while waiting for a descheduled sibling waste whole time
# slices; passive waiting keeps torch's multi-threaded ops usable there. Set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from joblib import Parallel, delayed  # noqa: E402

from vsp.data.norms import load_cslb  # noqa: E402
from vsp.decode.probe import probe_layer  # noqa: E402


def label_correlated_features(
    labels: np.ndarray, width: int, seed: int = 0, signal: float = 1.0
) -> np.ndarray:
    """(n, width) non-negative features whose directions carry the labels; rows L2-normalised."""
    rng = np.random.default_rng(seed)
    n, P = labels.shape
    k = min(width, 48)
    L = labels.astype(np.float64)
    latent = L @ rng.standard_normal((P, k)) / np.sqrt(L.sum(axis=1, keepdims=True) + 1.0)
    latent = signal * latent + rng.standard_normal((n, k))
    H = latent @ rng.standard_normal((k, width)) / np.sqrt(k) + 0.5 * rng.standard_normal((n, width))
    X = np.logaddexp(0.0, H)  # softplus
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _sk_property(X, y, folds, seed, C, tol, max_iter):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    out = []
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in skf.split(np.zeros(len(y)), y):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = LogisticRegression(class_weight="balanced", C=C, tol=tol, max_iter=max_iter)
            model.fit(X[train], y[train])
        out.append(f1_score(y[test], model.predict(X[test]), zero_division=0))
    return out


def sklearn_loop(X, labels, folds, seed, C, n_jobs, tol=1e-4, max_iter=100) -> np.ndarray:
    res = Parallel(n_jobs=n_jobs)(
        delayed(_sk_property)(X, labels[:, p], folds, seed, C, tol, max_iter) for p in range(labels.shape[1])
    )
    return np.asarray([f for r in res for f in r])


def agreement(a: np.ndarray, b: np.ndarray) -> str:
    d = np.abs(a - b)
    return f"identical {100 * (d == 0).mean():6.2f}%  mean|dF1| {d.mean():.5f}  max|dF1| {d.max():.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--norms", default=str(REPO.parent / "shared" / "data" / "cslb" / "norms.dat"))
    ap.add_argument("--widths", default="64,512,2048")
    ap.add_argument("--properties", type=int, default=0, help="first N properties only (0: all)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument(
        "--cores", type=int, default=os.cpu_count() or 1, help="joblib n_jobs (default: all cores)"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads for ours (default: --cores)")
    ap.add_argument(
        "--repeats", type=int, default=6, help="timed runs of ours (the sklearn loop: max(1, n // 2))"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--no-tight", action="store_true", help="skip the tight-tolerance scikit-learn reference")
    args = ap.parse_args()

    torch.set_num_threads(args.threads or args.cores)
    norms = load_cslb(args.norms)
    labels = np.asarray(norms.binary)
    if args.properties:
        labels = labels[:, : args.properties]
    n, P = labels.shape
    dtype = getattr(torch, args.dtype)
    print(
        f"bench_decode: {n} concepts x {P} properties x {args.folds} folds = {P * args.folds} fits a layer; "
        f"{args.cores} cores (torch threads {torch.get_num_threads()}, joblib n_jobs {args.cores}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}); "
        f"ours: {args.dtype} on {args.device}; sklearn {__import__('sklearn').__version__} lbfgs default tol"
    )
    rows = []
    for width in [int(w) for w in args.widths.split(",")]:
        X = label_correlated_features(np.asarray(norms.binary), width, seed=args.seed)

        def ours(X=X):
            return probe_layer(
                X, labels, folds=args.folds, seed=args.seed, C=args.C, dtype=dtype, device=args.device
            )

        ours()  # warm-up
        sklearn_loop(X, labels[:, : min(P, 4)], args.folds, args.seed, args.C, args.cores)  # start workers
        t_ours, t_sk = [], []
        for r in range(max(args.repeats, 1)):
            t0 = time.perf_counter()
            res = ours()
            t_ours.append(time.perf_counter() - t0)
            if r % 2 == 0 and len(t_sk) < max(1, args.repeats // 2):
                t0 = time.perf_counter()
                f1_sk = sklearn_loop(X, labels, args.folds, args.seed, args.C, args.cores)
                t_sk.append(time.perf_counter() - t0)
        a, b = min(t_ours), min(t_sk)
        print(
            f"\nwidth {width}: ours {a:.3f} s (runs {', '.join(f'{t:.3f}' for t in t_ours)}); "
            f"sklearn loop {b:.2f} s (runs {', '.join(f'{t:.2f}' for t in t_sk)})"
        )
        print(
            f"  speed-up {b / a:.1f}x   ({P * args.folds / a:.0f} vs {P * args.folds / b:.0f} fits/s); "
            f"Newton iterations mean {res['n_iter'].mean():.2f} max {res['n_iter'].max()}"
        )
        print(f"  F1 vs sklearn default tol : {agreement(res['f1'], f1_sk)}")
        line = {"width": width, "ours_s": a, "sklearn_s": b, "ratio": b / a}
        if not args.no_tight:
            f1_tight = sklearn_loop(
                X, labels, args.folds, args.seed, args.C, args.cores, tol=1e-10, max_iter=10000
            )
            print(f"  F1 vs sklearn tol=1e-10   : {agreement(res['f1'], f1_tight)}")
            print(f"  (sklearn default vs tight : {agreement(f1_sk, f1_tight)})")
        rows.append(line)
    print("\nsummary: " + "; ".join(f"width {r['width']}: {r['ratio']:.1f}x" for r in rows))


if __name__ == "__main__":
    main()
