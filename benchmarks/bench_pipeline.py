"""Extraction end to end, JPEG files to Zarr, beside the forward passes alone: the pipeline's efficiency.

Three rates, measured in one run on the same machine, the same networks, precision, memory format and batch:

(f) forward-only: ``MultiNetExtractor.forward_tensors`` on preprocessed tensors already on the device (the
    networks, the hooks and the pooling, nothing else);
(e) end to end without Ray (``--no-ray``): the stage's own loop, ``vsp.extract.stage.stream_units``, as
    ``vsp extract --no-ray`` runs it: ``decode_unit_images`` (read the files, decode the JPEGs, preprocess)
    one unit ahead, ``compute_unit`` (the networks, pooling, per-concept means), ``FeatureStore.write_unit``
    (the Zarr chunks and the unit's marker) one unit behind;
(r) end to end on embedded Ray (``cluster.extract.run_extraction_ray``): decode tasks and the extraction
    actor, as ``vsp extract`` runs them (skip with ``--skip-ray``).

The photographs are crops of scikit-learn's two bundled photographs (china.jpg, flower.jpg) at 500x375,
written as quality-90 JPEGs (or ``--photos DIR``: a ``<concept>/<files>`` tree of your own). The first unit
of each end-to-end run (and two batches of the forward-only run) warm up and are not timed: rates are the
images after the first unit over the time after it. Weights are seeded random (no downloads).

    python benchmarks/bench_pipeline.py --images 32                 # seconds on CPU
    python benchmarks/bench_pipeline.py --device cuda --images 2048 --batch-size 256 --bf16 --channels-last \
        --decoder torchvision                                   # the GPU input pipeline
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vsp.data.images import build_manifest  # noqa: E402
from vsp.extract.features import ExtractionConfig, FeatureStore, layer_differences  # noqa: E402
from vsp.extract.networks import PAPER_MODELS  # noqa: E402
from vsp.extract.stage import make_extractor, plan_extraction, stream_units  # noqa: E402
from vsp.io.store import open_store  # noqa: E402


def write_photographs(root: Path, n_images: int, per_concept: int, seed: int = 0) -> Path:
    """``n_images`` 500x375 q90 JPEGs cut from scikit-learn's two photographs, ``per_concept`` a folder."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # (427, 640, 3) each
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        photo = photos[i % 2]
        top, left = int(rng.integers(0, 427 - 375 + 1)), int(rng.integers(0, 640 - 500 + 1))
        folder = root / f"concept{i // per_concept:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo[top : top + 375, left : left + 500]).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def forward_only(args, extractor, records) -> float:
    """Images/s of the networks alone on device tensors (two untimed warm-up batches).

    The tensors are the first photographs, decoded and preprocessed beforehand: the same content as the
    end-to-end runs see (random tensors can take other paths through a network's arithmetic).
    """
    from vsp.data.images import decode_batch

    pre = decode_batch(records[: args.batch_size], preprocessings=extractor.preprocessings).tensors
    x = {k: v.to(args.device) for k, v in pre.items()}
    if args.channels_last:
        x = {k: v.contiguous(memory_format=torch.channels_last) for k, v in x.items()}
    batches = max(1, -(-args.images // args.batch_size))
    for _ in range(2):
        extractor.forward_tensors(x)
    _sync(args.device)
    t0 = time.perf_counter()
    for _ in range(batches):
        extractor.forward_tensors(x)
    _sync(args.device)
    return batches * args.batch_size / (time.perf_counter() - t0)


def end_to_end_local(args, config, records, store_dir: Path, extractor) -> float:
    """Images/s of the stage's own loop (what ``vsp extract --no-ray`` runs), after the first unit."""
    store = open_store(str(store_dir))
    plan = plan_extraction(records, config, extractor, store=store)
    marks: list[tuple[float, int]] = []

    class Timed(FeatureStore):  # marks each unit when its write finishes, as Ray's progress does
        def write_unit(self, plan, result) -> None:
            super().write_unit(plan, result)
            done = marks[-1][1] if marks else 0
            marks.append((time.perf_counter(), done + int(result.n_images.sum())))

    fs = Timed(store)
    fs.create(plan)
    stream_units(extractor, plan, fs, fs.pending_units(plan), args.batch_size)
    assert fs.complete()
    return _rate(marks)


def end_to_end_ray(args, config, records, store_dir: Path) -> float:
    """Images/s of ``run_extraction_ray`` on embedded Ray (decode tasks + one actor), after the first unit."""
    from cluster.extract import run_extraction_ray
    from cluster.runtime import init_ray

    init_ray()
    marks: list[tuple[float, int]] = []
    run_extraction_ray(
        str(store_dir), records, config, batch_size=args.batch_size,
        progress=lambda _d, _p, n: marks.append((time.perf_counter(), n)),
    )  # fmt: skip
    assert FeatureStore(open_store(str(store_dir))).complete()
    return _rate(marks)


def _rate(marks: list[tuple[float, int]]) -> float:
    if len(marks) < 2:
        raise SystemExit("need at least two units to time after the first: pass more --images")
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    return (n1 - n0) / (t1 - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--per-concept", type=int, default=4, help="images per concept folder")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (= one unit's images)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", default=",".join(PAPER_MODELS), help="model specs (vsp.extract.sources)")
    p.add_argument("--layers", default="paper")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (all three rates)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (all three)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch default)")
    p.add_argument("--photos", default=None, help="a <concept>/<files> tree of your own photographs")
    p.add_argument("--skip-ray", action="store_true", help="leave out the embedded-Ray rate")
    p.add_argument("--decoder", default="pil", choices=("pil", "torchvision"), help="extract.decoder")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the three; medians printed")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    unit_size = max(1, args.batch_size // args.per_concept)  # one unit = one batch of images
    config = ExtractionConfig(
        models=models, layers=args.layers, weights="random", unit_size=unit_size,
        precision="bfloat16" if args.bf16 else "float32", channels_last=args.channels_last,
        decoder=args.decoder,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vsp-bench-pipeline-") as tmp:
        root = Path(args.photos) if args.photos else write_photographs(Path(tmp) / "photos", args.images,
                                                                        args.per_concept)  # fmt: skip
        records = build_manifest(str(root))
        extractor = make_extractor(config, device=args.device)
        fwds, locals_, rays = [], [], []
        for r in range(args.rounds):  # interleaved, so drift of a shared machine hits every rate alike
            fwds.append(forward_only(args, extractor, records))
            locals_.append(end_to_end_local(args, config, records, Path(tmp) / f"local{r}", extractor))
            if not args.skip_ray:
                rays.append(end_to_end_ray(args, config, records, Path(tmp) / f"ray{r}"))
        fwd, local = float(np.median(fwds)), float(np.median(locals_))
        ray_rate = float(np.median(rays)) if rays else None
        diffs = None
        if (
            args.bf16 or args.channels_last or args.decoder != "pil"
        ):  # float32, channels-first, PIL: the reference
            from dataclasses import replace

            ref = replace(config, precision="float32", channels_last=False, decoder="pil")
            end_to_end_local(args, ref, records, Path(tmp) / "ref", make_extractor(ref, device=args.device))
            diffs = layer_differences(
                FeatureStore(open_store(str(Path(tmp) / "ref"))),
                FeatureStore(open_store(str(Path(tmp) / "local0"))),
            )
    precision = (
        ("bf16 autocast" if args.bf16 else "float32")
        + (f", decoder {args.decoder}")
        + (", channels_last" if args.channels_last else "")
    )
    print(
        f"bench_pipeline: {', '.join(models)} ({args.layers} layers); {len(records)} JPEGs "
        f"{'from ' + str(root) if args.photos else '500x375 q90'}, batch {args.batch_size} (= one unit); "
        f"device {args.device} ({torch.get_num_threads()} threads); {precision}; seeded random weights; "
        f"median of {args.rounds} interleaved rounds"
    )
    for name, rates in (("forward-only", fwds), ("no Ray", locals_), ("Ray", rays)):
        if rates:
            print(f"  rounds, {name:<12}: " + ", ".join(f"{r:.2f}" for r in rates))
    print(f"forward-only        : {fwd:9.2f} images/s  (device tensors, networks + hooks + pooling)")
    print(f"end to end, no Ray  : {local:9.2f} images/s  (read, decode, preprocess, networks, pooling, Zarr)")
    print(f"pipeline efficiency : {local / fwd:9.1%}  (end to end / forward-only)")
    if diffs:
        worst = sorted(diffs.items(), key=lambda kv: -kv[1])[:3]
        median = float(np.median(list(diffs.values())))
        print(
            f"vs float32 reference: max relative difference per layer: median {median:.2e}, worst "
            + ", ".join(f"{k} {v:.2e}" for k, v in worst)
        )
    if ray_rate is not None:
        print(f"end to end, Ray     : {ray_rate:9.2f} images/s  (embedded Ray: decode tasks + one actor)")
        print(f"Ray / no Ray        : {ray_rate / local:9.1%}")


if __name__ == "__main__":
    main()
