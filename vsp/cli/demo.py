"""`vsp demo`: generate the demo world, write its run file (``<out>/run.yaml``) and run every stage of it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from vsp.cli.app import DEFAULT_MODELS, NoRay, app, check_int, check_seed, check_store, csv_list
from vsp.errors import VspInputError


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the generated world and the run's store.")] = Path(
        "demo-run"
    ),
    concepts: Annotated[int, typer.Option(help="Number of generated concepts.")] = 24,
    images_per_concept: Annotated[int, typer.Option(help="Images per concept.")] = 6,
    seed: Annotated[
        int, typer.Option(help="Seed of the world, the random weights and the folds (0 .. 2**32 - 1).")
    ] = 0,
    models: Annotated[str, typer.Option(help="Networks to run.")] = DEFAULT_MODELS,
    no_ray: NoRay = False,
) -> None:
    """Generate the demo world and run every stage on it (random weights, embedded Ray, local store).

    Example: vsp demo --out demo-run
    """
    import yaml

    from vsp.cli.app import run_with_bars
    from vsp.cli.decode import print_summary_table
    from vsp.cli.mapping import map_lines
    from vsp.cli.meta import meta_lines
    from vsp.cli.similarity import similarity_lines
    from vsp.config import load_run_config
    from vsp.data.images import build_manifest, validate
    from vsp.data.norms import load_cslb, summary
    from vsp.data.synthetic import generate_world
    from vsp.io.store import open_store
    from vsp.similarity.stage import default_benchmarks, world_pairs

    check_int("--concepts", concepts, 2)
    check_int("--images-per-concept", images_per_concept, 1)
    check_seed("--seed", seed)
    names = csv_list(models)
    if not names:
        raise VspInputError(f"--models: name at least one torchvision model, got {models!r}")
    check_store(str(out), option="--out")
    world = generate_world(
        out / "world", n_concepts=concepts, images_per_concept=images_per_concept, seed=seed
    )
    nm = load_cslb(world.norms_path)
    s = summary(nm)
    typer.echo(
        f"[world] {s['concepts']} concepts x {s['properties']} properties; images under {world.images_root}"
    )
    report = validate(build_manifest(world.images_root), nm.concepts)
    typer.echo(f"[images] {report.to_text().splitlines()[0]}")
    pairs_path = world_pairs(world.spec_path, world.norms_path.parent / "pairs.txt")
    shared = {k: str(v) for k, v in default_benchmarks().items()}
    net = "resnet34" if "resnet34" in names else names[0]

    run_file = out / "run.yaml"
    doc = demo_run_file(out, world, pairs_path, shared, names, net, seed)
    run_file.write_text(RUN_FILE_HEADER + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    typer.echo(f"[run] {run_file}: the demo's run file (`vsp run {run_file}` runs the same pipeline)")
    cfg = load_run_config(run_file)
    record = run_with_bars(cfg, no_ray=no_ray)
    counts = record.attempt["stage_counts"]
    store = cfg.store
    st = open_store(store)

    typer.echo(f"[extract] {counts['extract']['summary']}")
    typer.echo(f"[decode] {counts['decode']['summary']}")
    print_summary_table(store)
    typer.echo(f"[meta] text vectors: {world.text_vectors_path} (synthetic, 50-d; not GloVe)")
    for line in meta_lines(st, counts["meta"], with_norms=True):
        typer.echo(line)
    typer.echo(
        f"[map] demo grid (lighter than the paper's 5 x 10-fold CV): {net}/* and text embeddings, "
        "1 x 5-fold CV, MLP fixed at lr 1e-3, weight decay 0, 200 epochs (no inner search); kNN k=5; "
        "ridge alpha by inner 5-fold CV"
    )
    for line in map_lines(store, counts["map"]):
        typer.echo(line)
    typer.echo(
        f"[similarity] demo-pairs = SYNTHETIC ratings from the world's attributes ({pairs_path}); "
        + ("MEN / SimLex-999 from the shared data" if shared else "MEN / SimLex-999 not found")
    )
    for line in similarity_lines(store, counts["similarity"]):
        typer.echo(line)
    typer.echo(f"[report] {counts['report']['summary']}")
    typer.echo(f"done: world in {out / 'world'}, results in {store}")
    typer.echo(f"report: {Path(cfg.report.out).resolve()}")


RUN_FILE_HEADER = """\
# Written by `vsp demo`: the demo's whole pipeline (`vsp run` / `vsp submit` take this file as it is).
# Lighter than the paper's setup, and says so: random weights; the mapping covers the paper's Table 2 rows
# (one network's penultimate / SVD / 1ToN, the text vectors, and their multimodal versions) with 1 x 5-fold
# CV and a fixed MLP (no inner search); the text vectors are the demo world's SYNTHETIC ones; the similarity
# pairs are SYNTHETIC ratings from the world's generating attributes (plus MEN / SimLex-999 when the shared
# data is there: the demo's concept names form almost no pair of them).
"""


def demo_run_file(
    out: Path, world, pairs_path: Path, shared: dict[str, str], models, net: str, seed: int
) -> dict[str, Any]:
    """The demo's run file: paths relative to ``out`` (where it is written), every setting the demo uses."""

    def rel(path: Path) -> str:
        return os.path.relpath(Path(path).resolve(), out.resolve())

    return {
        "images": rel(world.images_root),
        "store": "store",
        "norms": rel(world.norms_path),
        "stages": ["extract", "decode", "meta", "map", "similarity", "report"],
        "extract": {
            "models": list(models),
            "layers": "paper",
            "weights": "random",
            "seed": seed,
            "unit_size": 8,
        },
        "decode": {"seed": seed},
        "meta": {"text": rel(world.text_vectors_path), "seed": seed, "threads": 1},
        "map": {
            "embeddings": [f"{net}/*", "text"],
            "repeats": 1,
            "folds": 5,
            "seed": seed,
            "mlp_epochs": [200],
            "mlp_lr": [1e-3],
            "mlp_wd": [0.0],
        },
        # benchmark order as the demo always had it: the synthetic pairs first, then the shared data's
        "similarity": {"pairs": {"demo-pairs": rel(pairs_path), **shared}},
        "report": {"out": "report.html"},
    }
