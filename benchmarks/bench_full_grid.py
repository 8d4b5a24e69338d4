"""Time the whole four-network decoding grid on the real CSLB labels (638 concepts, 390 properties, 5 folds).

Features are seeded random vectors with the real widths of every tapped layer (AlexNet, VGG16, ResNet34,
DenseNet169: all-conv + penultimate = 226 layers), written through the real feature layout; what is measured
is the cost of the grid (440,700 fits), not its F1. Runs the decode stage in this process (``--ray`` for the
embedded Ray fan-out).

    python benchmarks/bench_full_grid.py [--store /tmp/vsp-full-grid] [--ray] [--repeats 5]

``--repeats R`` then adds R - 1 repeats of the folds to the same store (the inference rows join the decoded
run; the single split is not refitted) and times that too, with the bootstrap intervals of every mean; it
prints the cost of the grid with ``repeats: R`` against the single split, and what the random-weight control
adds (its decoding is the same grid again on features of the same widths; its extraction is one more
extraction pass, see ``bench_extract.py``).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from vsp.data.norms import load_cslb
from vsp.decode.stage import DecodeConfig, run_decode_local
from vsp.extract.features import ExtractionConfig, FeaturePlan, FeatureStore, UnitResult
from vsp.extract.hooks import MultiNetExtractor
from vsp.extract.stage import layer_infos
from vsp.io.store import open_store

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--norms", default=str(REPO.parent / "shared" / "data" / "cslb" / "norms.dat"))
    ap.add_argument("--store", default="/tmp/vsp-full-grid")
    ap.add_argument("--ray", action="store_true", help="fan layers out over an embedded Ray")
    ap.add_argument("--repeats", type=int, default=1, help="then add repeats of the folds and time them")
    args = ap.parse_args()
    shutil.rmtree(args.store, ignore_errors=True)
    norms = load_cslb(args.norms)
    layers = layer_infos(MultiNetExtractor(["alexnet", "vgg16", "resnet34", "densenet169"]))
    plan = FeaturePlan(
        ExtractionConfig(unit_size=64),
        norms.concepts,
        {c: [f"/synthetic/{c}.jpg"] for c in norms.concepts},
        layers,
        {m: "random:0" for m in ("alexnet", "vgg16", "resnet34", "densenet169")},
    )
    store = open_store(args.store)
    fs = FeatureStore(store)
    fs.create(plan)
    rng = np.random.default_rng(0)
    for u, (a, b) in enumerate(plan.units):
        cv, iv = {}, {}
        for layer in layers:
            x = rng.standard_normal((b - a, layer.channels), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            cv[layer.path], iv[layer.path] = x, x[:, None, :]
        fs.write_unit(plan, UnitResult(u, cv, iv, np.ones(b - a, np.int32)))
    t0 = time.perf_counter()
    if args.ray:
        from cluster.decode import run_decode_ray
        from cluster.runtime import init_ray

        init_ray(None)
        summary = run_decode_ray(store.uri, norms, DecodeConfig())
    else:
        summary = run_decode_local(store, norms, DecodeConfig())
    wall = time.perf_counter() - t0
    where = "embedded Ray" if args.ray else "in process"
    print(
        f"full grid: {len(layers)} layers x {len(norms.properties)} properties x 5 folds: {summary.fits} fits"
    )
    print(f"wall {wall:.1f} s ({where}), {summary.fits / wall:.0f} fits/s")
    print(summary.line())
    if args.repeats > 1:
        t1 = time.perf_counter()
        more = run_decode_local(store, norms, DecodeConfig(repeats=args.repeats))
        extra = time.perf_counter() - t1
        total = wall + extra
        print(
            f"repeats {args.repeats}: {more.fits} more fits in {extra:.1f} s (intervals included); "
            f"grid with repeats {args.repeats}: {total:.1f} s = {total / wall:.2f}x the single split"
        )
        print(
            f"random-weight control (decoding only, the same grid on the twin's features): + {total:.1f} s, "
            f"so repeats {args.repeats} + control: {2 * total:.1f} s of decoding; its extraction costs one "
            "more extraction pass (bench_extract.py)"
        )


if __name__ == "__main__":
    main()
