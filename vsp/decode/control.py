"""The random-network control: the same images through the same architectures with seeded random weights.

Selectivity (F1 of the trained network minus F1 of its random-weight twin, per property, class and layer) says
how much of a layer's decodability its training put there rather than the architecture and the images alone
(as in Oneata, Elliott & Frank 2025). The twin is a whole run of its own under ``decode/control/`` of the
same prefix: the extraction stage's functions write its features to ``decode/control/features`` (images,
layers, pooling and activation read from the trained run's feature manifest, weights ``random``) and the
decoding stage's own functions decode them with the same folds, repeats and C into
``decode/control/decode``. Its manifests guard it as any run's do (another control seed on the prefix is
refused by the twin's feature manifest), and its units resume like any others.
"""

from __future__ import annotations

import dataclasses
import io
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vsp.data.images import ImageRecord
from vsp.decode.grid import plot_selectivity
from vsp.decode.inference import SELECTIVITY, SELECTIVITY_INTERVALS, selectivity, selectivity_intervals
from vsp.errors import VspInputError
from vsp.extract.features import ExtractionConfig, FeatureStore
from vsp.io.store import Store

if TYPE_CHECKING:
    from vsp.decode.stage import DecodeConfig
    from vsp.stage import Stage, StageContext

CONTROL = "decode/control"


def control_store(store: Store) -> Store:
    """The prefix of the random-weight twin's run."""
    return store.child(CONTROL)


def control_seed(config: DecodeConfig, trained: dict[str, Any]) -> int:
    """The twin's weight seed: ``decode.control_seed``, else one derived from the trained run's seed.

    A trained run that itself has random weights with that very seed would be its own control: refused.
    """
    seed = config.control_seed
    if seed is None:
        seed = int(
            np.random.SeedSequence([int(trained.get("seed", 0)), 0x5EED]).generate_state(1, np.uint64)[0] >> 1
        )
    if trained.get("weights") == "random" and int(trained.get("seed", 0)) == seed:
        raise VspInputError(
            f"decode.control_seed {seed} is the seed of the extracted random weights: the control would be "
            "the network itself; choose another decode.control_seed"
        )
    return seed


def control_extraction(store: Store, config: DecodeConfig) -> tuple[list[ImageRecord], ExtractionConfig]:
    """The twin's images and extraction settings, from the trained run's feature manifest."""
    man = FeatureStore(store).manifest()
    if man is None:
        raise VspInputError(f"{store.uri}: no feature store to build a control for; run `vsp extract` first")
    identity = man["identity"]
    trained = identity["config"]
    models = [m for m in trained["models"] if config.models is None or m in config.models]
    layers = trained["layers"] if isinstance(trained["layers"], str) else tuple(trained["layers"])
    ext = ExtractionConfig(
        models=tuple(models),
        layers=layers,
        weights="random",
        seed=control_seed(config, trained),
        pooling=trained.get("pooling", "max"),
        unit_size=int(trained.get("unit_size", 16)),
        activation=trained.get("activation", "conv"),
        # computed as the trained features were (a store that records none of these is float32,
        # channels-first, PIL-decoded): the twin differs from it in its weights only
        precision=trained.get("precision", "float32"),
        channels_last=bool(trained.get("channels_last", False)),
        decoder=trained.get("decoder", "pil"),
    )
    records = [ImageRecord(c, uri) for c in identity["concepts"] for uri in identity["images"][c]]
    return records, ext


def run_control(stage: Stage, ctx: StageContext, norms: Any, config: DecodeConfig) -> list[str]:
    """Extract and decode the twin (resuming what is done), then write the selectivity tables; their keys."""
    from vsp.decode.stage import run_decode_local
    from vsp.extract.stage import run_extraction_local

    records, ext = control_extraction(ctx.store, config)
    twin_ctx = dataclasses.replace(ctx, store=control_store(ctx.store))
    batch = ctx.settings("extract").batch_size
    stage.drive(
        twin_ctx, "cluster.extract:run_extraction_ray", run_extraction_local, records, ext, None,
        what="control images", ray_kw={"batch_size": batch}, local_kw={"batch_size": batch},
    )  # fmt: skip
    twin = dataclasses.replace(config, control="none", permutations=0)
    stage.drive(
        twin_ctx, "cluster.decode:run_decode_ray", run_decode_local, norms, twin, what="control fits",
        ray_kw={"layers_per_task": config.layers_per_task},
    )  # fmt: skip
    return write_selectivity(ctx.store, config)


def write_selectivity(store: Store, config: DecodeConfig) -> list[str]:
    """``decode/selectivity.parquet`` and its intervals from the trained and the twin's marked rows."""
    from vsp.decode.stage import read_results

    trained = read_results(store, None, config.repeats)
    if config.models is not None:
        trained = trained.filter(pc.is_in(trained["model"], pa.array(list(config.models))))
    twin = read_results(control_store(store), None, config.repeats)
    per_prop = selectivity(trained, twin)
    store.write_parquet(SELECTIVITY, pa.Table.from_pandas(per_prop, preserve_index=False))
    bands = selectivity_intervals(per_prop, config)
    store.write_parquet(SELECTIVITY_INTERVALS, pa.Table.from_pandas(bands, preserve_index=False))
    outputs = [SELECTIVITY, SELECTIVITY_INTERVALS]
    for grouping, name in (("feature_class", "figure1"), ("fine_grained", "figure2")):
        buf = io.BytesIO()
        plot_selectivity(bands, buf, grouping)
        outputs.append(f"decode/{name}_selectivity.png")
        store.write_bytes(outputs[-1], buf.getvalue())
    return outputs
