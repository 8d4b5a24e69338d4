"""`vsp extract`: pooled features of every tapped layer of every network, into Zarr on a store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer

from vsp.cli.app import (
    DEFAULT_MODELS,
    Progress,
    app,
    check_int,
    check_seed,
    check_store,
    check_weights,
    csv_list,
)


def layers_arg(layers: str) -> str | tuple[str, ...]:
    """`all-conv`, `paper` and `re:<regex>` pass through; anything else is a comma-separated name list."""
    if layers in ("all-conv", "paper") or layers.startswith("re:"):
        return layers
    return csv_list(layers) or ()


@app.command()
def extract(
    images: Annotated[
        str, typer.Option("--images", help="Folder tree, s3:// prefix, or CSV/Parquet manifest.")
    ],
    store: Annotated[str, typer.Option("--store", help="Output prefix: local folder or s3://bucket/prefix.")],
    models: Annotated[str, typer.Option(help="Comma-separated torchvision model names.")] = DEFAULT_MODELS,
    layers: Annotated[
        str,
        typer.Option(
            help="paper (DenseNet: first conv, dense layers, transitions; else every conv) | all-conv | "
            "re:<regex> | comma-separated module names."
        ),
    ] = "paper",
    weights: Annotated[
        str, typer.Option(help="imagenet | random | path or s3:// URI of a state_dict.")
    ] = "imagenet",
    seed: Annotated[int, typer.Option(help="Seed for random weights (0 .. 2**63 - 1).")] = 0,
    pooling: Annotated[str, typer.Option(help="Global pooling per channel: max | mean.")] = "max",
    activation: Annotated[
        str,
        typer.Option(
            help="Value pooled: conv (the layer's own output) | bn (after the BatchNorm that follows it; "
            "AlexNet/VGG have none: = conv) | relu (that through a ReLU)."
        ),
    ] = "conv",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    unit_size: Annotated[int, typer.Option(help="Concepts per work unit (= Zarr chunk rows).")] = 16,
    norms: Annotated[
        str | None, typer.Option("--norms", help="Keep only concepts present in these norms.")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray address: auto | ray://host:10001. Default: embedded local Ray.")
    ] = None,
    no_ray: Annotated[bool, typer.Option("--no-ray", help="Run in this process without Ray.")] = False,
    follow_links: Annotated[
        bool,
        typer.Option(
            "--follow-links", help="Use symlinks and manifest uris (..) that lead outside the image root."
        ),
    ] = False,
) -> None:
    """Extract pooled features of every tapped layer of every network, one forward pass per batch.

    Example: vsp extract --images photos/ --store runs/r1 --weights random --models alexnet,resnet34

    Post-BatchNorm, post-ReLU values: vsp extract --images photos/ --store runs/r2 --activation relu
    """
    from vsp.data.images import build_manifest
    from vsp.extract.features import ExtractionConfig

    # errors (bad input 2, another configuration in the store 3, storage 4) become one line in vsp.cli.app
    check_int("--batch-size", batch_size, 1)
    check_int("--unit-size", unit_size, 1)
    check_seed("--seed", seed, weights=True)
    config = ExtractionConfig(
        models=csv_list(models) or (),
        layers=layers_arg(layers),
        weights=check_weights("--weights", weights),
        seed=seed,
        pooling=pooling,
        unit_size=unit_size,
        activation=activation,
    )
    check_store(store)
    records = build_manifest(images, follow_links=follow_links)
    concepts = None
    if norms:
        from vsp.data.norms import load_cslb

        concepts = load_cslb(norms).concepts
    summary = run_extract(store, records, config, concepts, batch_size, address, no_ray)
    typer.echo(summary.line())


def run_extract(
    store: str,
    records: Sequence,
    config,
    concepts=None,
    batch_size: int = 32,
    address: str | None = None,
    no_ray: bool = False,
):
    """Run extraction with a progress bar, through Ray unless ``no_ray`` (shared by `extract` and `demo`)."""
    from vsp.io.store import open_store

    progress = Progress("extract", "unit", "images")
    try:
        if no_ray:
            from vsp.extract.stage import run_extraction_local

            return run_extraction_local(
                open_store(store), records, config, concepts, batch_size=batch_size, progress=progress
            )
        from cluster.extract import run_extraction_ray
        from cluster.runtime import init_ray

        return run_extraction_ray(
            open_store(store).uri, records, config, concepts, batch_size=batch_size, progress=progress,
            connect=lambda: init_ray(address),  # only when a unit is pending: a no-op rerun starts no Ray
        )  # fmt: skip
    finally:
        progress.close()
