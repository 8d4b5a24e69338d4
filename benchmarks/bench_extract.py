"""One-pass all-layer extraction vs. a per-layer baseline: images/s and peak memory.

(a) one-pass: ``vsp.extract.hooks.MultiNetExtractor``, one forward pass per network per batch, every tap
    pooled inside its hook (all-conv + penultimate).
(b) per-layer baseline (what a per-module extractor such as thingsvision does): for each tap, one forward pass
    per batch with a hook that keeps a copy of the *full* feature map on the host; after all batches the maps
    are concatenated and max-pooled.

Each mode runs in its own subprocess, once for time and once more for memory. Peak memory is the memory run's
peak RSS (``resource.getrusage`` ``ru_maxrss``), reported as the increase over a subprocess that only loads
the same models; memory runs set ``MALLOC_MMAP_THRESHOLD_`` so glibc hands freed feature maps back to the OS
(else RSS depends on heap history, not on what is live) and skip the warm-up. On CUDA,
``torch.cuda.max_memory_allocated`` of the timing runs as well. Images are seeded random tensors; weights are
seeded random (no downloads). Model loading is not timed; two untimed warm-up batches per network run first in
both modes.

The baseline costs one forward pass per tap (226 for the four networks), so ``--baseline-layers K`` times only
K evenly spaced taps per network and extrapolates: network time = mean time per measured tap x number of taps.
The printout says which was done.

    python benchmarks/bench_extract.py                       # 8 images, 224 px, CPU, four networks
    python benchmarks/bench_extract.py --baseline-layers 6   # faster: extrapolate the baseline per layer
    python benchmarks/bench_extract.py --device cuda --images 256 --batch-size 64 --bf16 --channels-last
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vsp.extract.hooks import MultiNetExtractor, _first_tensor, extract_images, resolve_layouts  # noqa: E402
from vsp.extract.layouts import pool_layout  # noqa: E402
from vsp.extract.networks import PAPER_MODELS, penultimate_tap, select_layers  # noqa: E402
from vsp.extract.sources import load_source, parse_source  # noqa: E402


def load_model(spec: str, weights: str = "random", seed: int = 0):
    """Any model spec (`vsp.extract.sources`), as ``(model, identity)``."""
    loaded = load_source(spec, weights, seed)
    return loaded.model, loaded.identity


# glibc returns every block above this size to the OS on free, so peak RSS tracks live memory (memory runs)
MMAP_THRESHOLD = str(128 * 1024)


def _images(args) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(args.images, 3, args.size, args.size, generator=g)


def _peak_rss_mib() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 1024.0


def _autocast(args):
    if not args.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16)


def _sync(args) -> None:
    if torch.device(args.device).type == "cuda":
        torch.cuda.synchronize()


def _cuda_reset(args) -> None:
    if torch.device(args.device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak(args) -> float | None:
    if torch.device(args.device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def child_load(args) -> dict:
    models = [load_model(m, "random", seed=0)[0].to(args.device) for m in args.models]
    x = _images(args)
    return {"mode": "load", "n_models": len(models), "x": list(x.shape), "peak_rss_mib": _peak_rss_mib()}


def child_onepass(args) -> dict:
    x = _images(args)
    kw = dict(
        layers=args.layers,
        seed=0,
        device=args.device,
        dtype=torch.bfloat16 if args.bf16 else torch.float32,
        channels_last=args.channels_last,
    )
    # one extractor per network, all loaded at once: the same work as one MultiNetExtractor over all of them
    # (which runs its networks one after another), with a per-network time
    exs = {name: MultiNetExtractor([name], **kw) for name in args.models}
    for ex in exs.values():
        for _ in range(args.warmup):
            ex(x[: args.batch_size])
    _sync(args)
    _cuda_reset(args)
    per_model = {}
    total = 0.0
    for name, ex in exs.items():
        t0 = time.perf_counter()
        out = extract_images(ex, x, args.batch_size)
        _sync(args)
        dt = time.perf_counter() - t0
        group = parse_source(name).group
        assert len(out[group]) == len(ex.taps[group])
        per_model[name] = {"seconds": dt, "taps": len(ex.taps[group])}
        total += dt
    return {
        "mode": "onepass",
        "seconds": total,
        "per_model": per_model,
        "peak_rss_mib": _peak_rss_mib(),
        "cuda_peak_mib": _cuda_peak(args),
    }


def child_baseline(args) -> dict:
    x = _images(args)
    dev = torch.device(args.device)
    per_model = {}
    total = 0.0
    _cuda_reset(args)
    loaded = {
        name: load_model(name, "random", seed=0)[0].to(dev) for name in args.models
    }  # all held at once, as in the one-pass mode
    for name, model in loaded.items():
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        taps = select_layers(model, name, args.layers) + [penultimate_tap(model, name)]
        taps = resolve_layouts(model, name, taps, "max", dev)
        k = args.baseline_layers
        measured = (
            taps if k <= 0 or k >= len(taps) else [taps[int(i)] for i in np.linspace(0, len(taps) - 1, k)]
        )
        mods = dict(model.named_modules())
        with torch.inference_mode(), _autocast(args):
            for _ in range(args.warmup):
                model(x[: args.batch_size].to(dev))
        _sync(args)
        seconds = 0.0
        for tap in measured:
            kept: list[torch.Tensor] = []
            module = mods[tap.module_name]
            if tap.kind == "penultimate":

                def pre_hook(_m, a, kept=kept):
                    kept.append(a[0].detach().clone().cpu())

                h = module.register_forward_pre_hook(pre_hook)
            else:

                def hook(_m, _a, o, kept=kept):
                    kept.append(_first_tensor(o).detach().clone().cpu())  # the full map, as a per-module
                    # extractor keeps it

                h = module.register_forward_hook(hook)
            t0 = time.perf_counter()
            with torch.inference_mode(), _autocast(args):
                for i in range(0, args.images, args.batch_size):
                    xb = x[i : i + args.batch_size].to(dev)
                    if args.channels_last:
                        xb = xb.contiguous(memory_format=torch.channels_last)
                    model(xb)
            full = torch.cat(kept)  # every image's full map of this layer, as a per-module extractor keeps it
            pooled = pool_layout(full.float(), tap.layout, "max", prefix=tap.prefix)
            pooled.numpy()
            seconds += time.perf_counter() - t0
            h.remove()
            del kept, full, pooled
        est = seconds / len(measured) * len(taps)
        per_model[name] = {
            "seconds": est,
            "measured_seconds": seconds,
            "taps": len(taps),
            "measured_taps": len(measured),
        }
        total += est
    return {
        "mode": "baseline",
        "seconds": total,
        "per_model": per_model,
        "peak_rss_mib": _peak_rss_mib(),
        "cuda_peak_mib": _cuda_peak(args),
    }


def _run_child(mode: str, argv: list[str], memory: bool = False) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", mode]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if memory:
        # a separate run for memory: fixed mmap threshold (else glibc's heap keeps freed maps and RSS
        # depends on allocation history), no warm-up; its times are not used
        env["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD
        cmd += ["--warmup", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{mode} subprocess failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", default=",".join(PAPER_MODELS), help="model specs (vsp.extract.sources)")
    p.add_argument("--layers", default="all-conv", help="layer selection of both modes (all-conv, blocks)")
    p.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (both modes)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (both modes)")
    p.add_argument(
        "--baseline-layers",
        type=int,
        default=0,
        help="time only K evenly spaced taps per network in the baseline and extrapolate (0 = all taps)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch default)")
    p.add_argument("--warmup", type=int, default=2, help="untimed full batches per network before timing")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.child:
        fn = {"load": child_load, "onepass": child_onepass, "baseline": child_baseline}[args.child]
        print(json.dumps(fn(args)))
        return

    argv = sys.argv[1:]
    one = _run_child("onepass", argv)
    base = _run_child("baseline", argv)
    mem = {m: _run_child(m, argv, memory=True) for m in ("load", "onepass", "baseline")}

    n_taps = sum(v["taps"] for v in one["per_model"].values())
    dtype = "bf16 autocast" if args.bf16 else "float32"
    fmt = ", channels_last" if args.channels_last else ""
    print(
        f"bench_extract: {', '.join(args.models)}; {args.layers} + penultimate = {n_taps} taps; "
        f"{args.images} images {args.size}x{args.size}, batch {args.batch_size}; device {args.device} "
        f"({torch.get_num_threads()} threads); {dtype}{fmt}; seeded random weights"
    )
    print(
        f"{'network':<28} {'taps':>5} {'one-pass s':>11} {'baseline s':>11} {'ratio':>7}  baseline measured"
    )
    for name in args.models:
        o, b = one["per_model"][name], base["per_model"][name]
        how = (
            "all taps"
            if b["measured_taps"] == b["taps"]
            else f"{b['measured_taps']}/{b['taps']} taps in {b['measured_seconds']:.1f}s, extrapolated"
        )
        print(
            f"{name:<28} {o['taps']:>5} {o['seconds']:>11.2f} {b['seconds']:>11.2f} "
            f"{b['seconds'] / o['seconds']:>6.1f}x  {how}"
        )
    ips_one = args.images / one["seconds"]
    ips_base = args.images / base["seconds"]
    print(f"one-pass : {ips_one:8.3f} images/s  (1 forward per network per batch, maps pooled in hooks)")
    extrap = any(b["measured_taps"] != b["taps"] for b in base["per_model"].values())
    print(
        f"baseline : {ips_base:8.3f} images/s  (1 forward per tap per batch, full maps kept"
        f"{'; extrapolated from a subset of taps' if extrap else ''})"
    )
    print(f"ratio    : one-pass is {ips_one / ips_base:.1f}x the baseline in images/s")
    load_rss, one_rss, base_rss = (mem[m]["peak_rss_mib"] for m in ("load", "onepass", "baseline"))
    print(
        f"peak RSS : load-only {load_rss:.0f} MiB; one-pass {one_rss:.0f} MiB (+{one_rss - load_rss:.0f}); "
        f"baseline {base_rss:.0f} MiB (+{base_rss - load_rss:.0f})  [separate runs, "
        f"MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}; baseline over the same taps as timed]"
    )
    if one.get("cuda_peak_mib") is not None:
        print(
            f"peak CUDA: one-pass {one['cuda_peak_mib']:.0f} MiB; baseline {base['cuda_peak_mib']:.0f} MiB "
            "(torch.cuda.max_memory_allocated)"
        )


if __name__ == "__main__":
    main()
