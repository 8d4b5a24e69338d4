"""`vsp demo`: generate the demo world and run every stage on it, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vsp.cli.app import DEFAULT_MODELS, app, check_int, check_seed, check_store, csv_list


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
    no_ray: Annotated[bool, typer.Option("--no-ray", help="Run in this process without Ray.")] = False,
) -> None:
    """Generate the demo world and run every stage on it (random weights, embedded Ray, local store).

    Example: vsp demo --out demo-run
    """
    from vsp.cli.decode import print_summary_table, run_decode
    from vsp.cli.extract import run_extract
    from vsp.data.images import build_manifest, validate
    from vsp.data.norms import load_cslb, summary
    from vsp.data.synthetic import generate_world
    from vsp.decode.stage import DecodeConfig
    from vsp.extract.features import ExtractionConfig

    check_int("--concepts", concepts, 2)
    check_int("--images-per-concept", images_per_concept, 1)
    check_seed("--seed", seed)
    check_store(str(out), option="--out")
    world = generate_world(
        out / "world", n_concepts=concepts, images_per_concept=images_per_concept, seed=seed
    )
    store = str((out / "store").resolve())
    nm = load_cslb(world.norms_path)
    s = summary(nm)
    typer.echo(
        f"[world] {s['concepts']} concepts x {s['properties']} properties; images under {world.images_root}"
    )
    manifest = build_manifest(world.images_root)
    report = validate(manifest, nm.concepts)
    typer.echo(f"[images] {report.to_text().splitlines()[0]}")
    config = ExtractionConfig(
        models=csv_list(models) or (),
        layers="paper",
        weights="random",
        seed=seed,
        unit_size=8,
    )
    typer.echo(f"[extract] {run_extract(store, manifest, config, nm.concepts, no_ray=no_ray).line()}")
    typer.echo(f"[decode] {run_decode(store, nm, DecodeConfig(seed=seed), no_ray=no_ray).line()}")
    print_summary_table(store)
    from vsp.cli.mapping import run_demo_steps

    run_demo_steps(out, store, world, nm, config.models, seed, no_ray)
    from vsp.report.build import write_report

    report = write_report(store, out / "report.html", norms=nm)
    typer.echo(f"[report] {report.line()}")
    typer.echo(f"done: world in {out / 'world'}, results in {store}")
    typer.echo(f"report: {(out / 'report.html').resolve()}")
