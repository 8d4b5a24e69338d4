"""`vsp extract`: pooled features of every tapped layer of every network, into Zarr on a store."""

from __future__ import annotations

from typing import Annotated

import typer

from vsp.cli.app import (
    DEFAULT_MODELS,
    Address,
    FollowLinks,
    NoRay,
    app,
    check_int,
    check_seed,
    check_store,
    check_weights,
    csv_list,
    run_stages,
)
from vsp.errors import VspInputError


def batch_size_arg(text: str) -> int | str:
    """``--batch-size``: ``auto`` or an integer >= 1 (the error names the option)."""
    if text.strip() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise VspInputError(f"--batch-size: must be an integer >= 1 or auto, got {text!r}") from None
    return check_int("--batch-size", value, 1)


def layers_arg(layers: str) -> str | tuple[str, ...]:
    """`all-conv`, `paper`, `blocks` and `re:<regex>` pass through; anything else is a list of names."""
    if layers in ("all-conv", "paper", "blocks") or layers.startswith("re:"):
        return layers
    return csv_list(layers) or ()


@app.command()
def extract(
    images: Annotated[
        str, typer.Option("--images", help="Folder tree, s3:// prefix, or CSV/Parquet manifest.")
    ],
    store: Annotated[str, typer.Option("--store", help="Output prefix: local folder or s3://bucket/prefix.")],
    models: Annotated[
        str,
        typer.Option(
            help="Comma-separated model specs: torchvision names (resnet34), timm:<name>, "
            "open_clip:<arch>[:<tag>], hf:<repo|folder|model type>."
        ),
    ] = DEFAULT_MODELS,
    layers: Annotated[
        str,
        typer.Option(
            help="paper (DenseNet: first conv, dense layers, transitions; else every conv) | all-conv | "
            "blocks (each repeated block) | re:<regex> | comma-separated module names."
        ),
    ] = "paper",
    weights: Annotated[
        str,
        typer.Option(
            help="imagenet (= pretrained: each family's published weights) | random | path or s3:// URI of a "
            "state_dict or safetensors file."
        ),
    ] = "imagenet",
    seed: Annotated[int, typer.Option(help="Seed for random weights (0 .. 2**63 - 1).")] = 0,
    pooling: Annotated[
        str, typer.Option(help="Per channel: max | mean (over space or patch tokens) | cls (class token).")
    ] = "max",
    activation: Annotated[
        str,
        typer.Option(
            help="Value pooled: conv (the layer's own output) | bn (after the BatchNorm that follows it; "
            "AlexNet/VGG have none: = conv) | relu (that through a ReLU)."
        ),
    ] = "conv",
    precision: Annotated[
        str, typer.Option(help="float32 | bfloat16 (autocast; faster on GPUs, other numbers: identity).")
    ] = "float32",
    channels_last: Annotated[
        bool | None,
        typer.Option(
            "--channels-last/--channels-first",
            help="Memory format (identity). Default: what the store holds, else channels-last on a CPU "
            "(1.2-1.3x faster there) and channels-first on a GPU.",
            show_default=False,
        ),
    ] = None,
    decoder: Annotated[
        str,
        typer.Option(
            help="pil (PIL decode and resize on CPU workers) | torchvision (JPEGs decoded and resized on the "
            "extraction device: the GPU input pipeline; identity)."
        ),
    ] = "pil",
    batch_size: Annotated[
        str, typer.Option(help="Images per forward pass, or auto (32 on a CPU; a GPU: from its free memory).")
    ] = "auto",
    unit_size: Annotated[int, typer.Option(help="Concepts per work unit (= Zarr chunk rows).")] = 16,
    norms: Annotated[
        str | None, typer.Option("--norms", help="Keep only concepts present in these norms.")
    ] = None,
    address: Address = None,
    no_ray: NoRay = False,
    follow_links: FollowLinks = False,
) -> None:
    """Extract pooled features of every tapped layer of every network, one forward pass per batch.

    Example: vsp extract --images photos/ --store runs/r1 --weights random --models alexnet,resnet34

    Transformers, every block: vsp extract --images photos/ --store runs/vit --weights random
    --models timm:vit_tiny_patch16_224,open_clip:ViT-B-32,hf:dinov2 --layers blocks

    Post-BatchNorm, post-ReLU values: vsp extract --images photos/ --store runs/r2 --activation relu
    """
    # errors (bad input 2, another configuration in the store 3, storage 4) become one line in vsp.cli.app
    batch = batch_size_arg(batch_size)
    check_int("--unit-size", unit_size, 1)
    check_seed("--seed", seed, weights=True)
    if pooling not in ("max", "mean", "cls"):
        raise VspInputError(f"--pooling: pooling must be 'max', 'mean' or 'cls', got {pooling!r}")
    if activation not in ("conv", "bn", "relu"):
        raise VspInputError(f"--activation: activation must be 'conv', 'bn' or 'relu', got {activation!r}")
    if precision not in ("float32", "bfloat16"):
        raise VspInputError(f"--precision: must be float32 or bfloat16, got {precision!r}")
    if decoder not in ("pil", "torchvision"):
        raise VspInputError(f"--decoder: must be pil or torchvision, got {decoder!r}")
    names = csv_list(models)
    if not names:
        raise VspInputError(f"--models: name at least one model, got {models!r}")
    chosen = layers_arg(layers)
    doc = {
        "store": check_store(store),
        "images": images,
        "stages": ["extract"],
        "extract": {
            "models": list(names),
            "layers": chosen if isinstance(chosen, str) else list(chosen),
            "weights": check_weights("--weights", weights),
            "seed": seed,
            "pooling": pooling,
            "activation": activation,
            **({"precision": precision} if precision != "float32" else {}),
            **({"channels_last": channels_last} if channels_last is not None else {}),
            **({"decoder": decoder} if decoder != "pil" else {}),
            "unit_size": unit_size,
            "batch_size": batch,
            "follow_links": follow_links,
        },
    }
    if norms:
        doc["norms"] = norms
    _, counts = run_stages(doc, ["extract"], address=address, no_ray=no_ray, source="vsp extract")
    typer.echo(counts["extract"]["summary"])
