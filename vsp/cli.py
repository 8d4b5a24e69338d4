"""The `vsp` command: every pipeline stage, with real examples in --help.

Ray is imported only inside the commands that fan work out (through ``cluster``), so `vsp norms` and
`vsp images validate` start instantly and the compute core stays Ray-free.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from vsp.errors import ConfigMismatchError, VspInputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help=(
        "vsp: which human semantic knowledge each layer of an image network encodes.\n\n"
        "Examples:\n\n"
        "  vsp demo --out demo-run\n\n"
        "  vsp norms --norms ../shared/data/cslb/norms.dat --json\n\n"
        "  vsp images validate --images photos/ --norms norms.dat\n\n"
        "  vsp extract --images photos/ --store s3://bucket/run1 --weights imagenet\n\n"
        "  vsp decode --store s3://bucket/run1 --norms norms.dat"
    ),
)
images_app = typer.Typer(no_args_is_help=True, help="Image manifests: build and validate.")
app.add_typer(images_app, name="images")

DEFAULT_MODELS = "alexnet,vgg16,resnet34,densenet169"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    _setup_logging(verbose)


# ----------------------------------------------------------------------------------------------------- norms
@app.command()
def norms(
    norms: Annotated[str, typer.Option("--norms", help="CSLB norms.dat (or McRae .xlsx) path or URI.")],
    min_pf: Annotated[float, typer.Option(help="Keep (concept, property) pairs with production frequency >= N.")] = 5,
    min_concepts: Annotated[int, typer.Option(help="Keep properties that occur for >= N concepts.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Count concepts and properties after filtering, per feature class and fine-grained type.

    Example: vsp norms --norms ../shared/data/cslb/norms.dat --json
    """
    from vsp.norms import load_cslb, load_mcrae, summary

    try:
        loader = load_mcrae if str(norms).endswith(".xlsx") else load_cslb
        s = summary(loader(norms, min_pf=min_pf, min_concepts=min_concepts))
    except (VspInputError, FileNotFoundError) as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(s))
        return
    typer.echo(f"{s['concepts']} concepts x {s['properties']} properties (pf >= {min_pf}, >= {min_concepts} concepts)")
    typer.echo("feature classes: " + ", ".join(f"{k} {v}" for k, v in s["feature_classes"].items()))
    typer.echo("fine-grained:    " + ", ".join(f"{k} {v}" for k, v in s["fine_grained"].items()))


# ---------------------------------------------------------------------------------------------------- images
@images_app.command("validate")
def images_validate(
    images: Annotated[str, typer.Option("--images", help="Folder tree <root>/<concept>/<files>, s3:// prefix, or CSV/Parquet manifest.")],
    norms: Annotated[str | None, typer.Option("--norms", help="Norms file: report concepts missing on either side.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check that every image decodes and that image concepts match the norms; exit 1 on problems.

    Example: vsp images validate --images photos/ --norms ../shared/data/cslb/norms.dat
    """
    from vsp.images import build_manifest, validate

    try:
        manifest = build_manifest(images)
        concepts = None
        if norms:
            from vsp.norms import load_cslb

            concepts = load_cslb(norms).concepts
        report = validate(manifest, concepts)
    except (VspInputError, FileNotFoundError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps(report.to_dict(), indent=1) if as_json else report.to_text())
    if not report.ok:
        raise typer.Exit(1)


# --------------------------------------------------------------------------------------------------- extract
def _layers_arg(layers: str) -> str | tuple[str, ...]:
    if layers in ("all-conv", "paper") or layers.startswith("re:"):
        return layers
    return tuple(x.strip() for x in layers.split(",") if x.strip())


@app.command()
def extract(
    images: Annotated[str, typer.Option("--images", help="Folder tree, s3:// prefix, or CSV/Parquet manifest.")],
    store: Annotated[str, typer.Option("--store", help="Output prefix: local folder or s3://bucket/prefix.")],
    models: Annotated[str, typer.Option(help="Comma-separated torchvision model names.")] = DEFAULT_MODELS,
    layers: Annotated[str, typer.Option(help="all-conv | paper | re:<regex> | comma-separated module names.")] = "all-conv",
    weights: Annotated[str, typer.Option(help="imagenet | random | path or s3:// URI of a state_dict.")] = "imagenet",
    seed: Annotated[int, typer.Option(help="Seed for random weights.")] = 0,
    pooling: Annotated[str, typer.Option(help="Global pooling per channel: max | mean.")] = "max",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    unit_size: Annotated[int, typer.Option(help="Concepts per work unit (= Zarr chunk rows).")] = 16,
    norms: Annotated[str | None, typer.Option("--norms", help="Keep only concepts present in these norms.")] = None,
    address: Annotated[str | None, typer.Option(help="Ray address: auto | ray://host:10001. Default: embedded local Ray.")] = None,
    no_ray: Annotated[bool, typer.Option("--no-ray", help="Run in this process without Ray.")] = False,
) -> None:
    """Extract pooled features of every tapped layer of every network, one forward pass per batch.

    Example: vsp extract --images photos/ --store runs/r1 --weights random --models alexnet,resnet34
    """
    from vsp.features import ExtractionConfig
    from vsp.images import build_manifest

    try:
        config = ExtractionConfig(
            models=tuple(m.strip() for m in models.split(",") if m.strip()), layers=_layers_arg(layers),
            weights=weights, seed=seed, pooling=pooling, unit_size=unit_size,
        )
        records = build_manifest(images)
        concepts = None
        if norms:
            from vsp.norms import load_cslb

            concepts = load_cslb(norms).concepts
        summary = run_extract(store, records, config, concepts, batch_size, address, no_ray)
    except ConfigMismatchError as exc:
        _fail(str(exc), 3)
    except (VspInputError, FileNotFoundError) as exc:
        _fail(str(exc))
    typer.echo(summary.line())


def run_extract(store, records, config, concepts, batch_size=32, address=None, no_ray=False):
    """Run extraction with a progress bar, through Ray unless ``no_ray`` (shared by `extract` and `demo`)."""
    from tqdm import tqdm

    from vsp.store import open_store

    bar = tqdm(total=None, unit="unit", desc="extract", file=sys.stderr, dynamic_ncols=True)
    t0 = time.perf_counter()

    def progress(done: int, total: int, images: int | None = None) -> None:
        bar.total = total
        bar.n = done
        if images is not None:
            rate = images / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix_str(f"{images} images, {rate:.1f} images/s")
        bar.refresh()

    try:
        if no_ray:
            from vsp.extract_stage import run_extraction_local

            return run_extraction_local(open_store(store), records, config, concepts, batch_size=batch_size,
                                        progress=lambda d, t: progress(d, t))
        from cluster.extract import run_extraction_ray
        from cluster.runtime import init_ray

        init_ray(address)
        return run_extraction_ray(str(open_store(store).uri), records, config, concepts, batch_size=batch_size,
                                  progress=progress)
    finally:
        bar.close()


# ------------------------------------------------------------------------------------------------------ demo
@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the generated world and the run's store.")] = Path("demo-run"),
    concepts: Annotated[int, typer.Option(help="Number of generated concepts.")] = 24,
    images_per_concept: Annotated[int, typer.Option(help="Images per concept.")] = 6,
    seed: Annotated[int, typer.Option(help="Seed of the generated world and the random weights.")] = 0,
    models: Annotated[str, typer.Option(help="Networks to run.")] = DEFAULT_MODELS,
    no_ray: Annotated[bool, typer.Option("--no-ray", help="Run in this process without Ray.")] = False,
) -> None:
    """Generate the demo world and run every stage on it (random weights, embedded Ray, local store).

    Example: vsp demo --out demo-run
    """
    from vsp.features import ExtractionConfig
    from vsp.images import build_manifest, validate
    from vsp.norms import load_cslb, summary
    from vsp.synthetic import generate_world

    world = generate_world(out / "world", n_concepts=concepts, images_per_concept=images_per_concept, seed=seed)
    store = str(out / "store")
    nm = load_cslb(world.norms_path)
    s = summary(nm)
    typer.echo(f"[1/3] world: {s['concepts']} concepts x {s['properties']} properties, images under {world.images_root}")
    manifest = build_manifest(world.images_root)
    report = validate(manifest, nm.concepts)
    typer.echo(f"      images: {report.to_text().splitlines()[0]}")
    config = ExtractionConfig(
        models=tuple(models.split(",")), layers="all-conv", weights="random", seed=seed, unit_size=8
    )
    summary_ = run_extract(store, manifest, config, nm.concepts, no_ray=no_ray)
    typer.echo(f"[2/3] {summary_.line()}")
    _demo_decode(store, world.norms_path, no_ray)
    typer.echo(f"done: results under {out}")


def _demo_decode(store: str, norms_path: Path, no_ray: bool) -> None:
    try:
        from vsp import decode as _  # noqa: F401
    except ImportError:
        typer.echo("[3/3] decode: not available in this version")
        return
    summary_ = run_decode(store, str(norms_path), address=None, no_ray=no_ray)
    typer.echo(f"[3/3] {summary_}")


def run_decode(store: str, norms_path: str, address: str | None = None, no_ray: bool = False, **kw) -> str:
    """Placeholder replaced when the decoding stage is wired in."""
    raise NotImplementedError


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
