"""vsp.decode.grid: the per-layer Arrow table, the aggregation, Figures 1-2 and the baseline table."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from vsp.data.norms import FEATURE_CLASSES, FINE_GRAINED, Norms
from vsp.decode import grid as decode
from vsp.decode.grid import (
    aggregate,
    aggregate_intervals,
    baseline_table,
    decode_layer,
    plot_figure1,
    plot_figure2,
    residual_positions,
)
from vsp.errors import VspInputError

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_norms(n: int = 60, P: int = 6, seed: int = 0) -> Norms:
    rng = np.random.default_rng(seed)
    binary = np.zeros((n, P), dtype=np.uint8)
    for p in range(P):
        binary[rng.choice(n, size=8 + 3 * p, replace=False), p] = 1
    return Norms(
        concepts=[f"c{i:03d}" for i in range(n)],
        properties=[f"prop {p}" for p in range(P)],
        binary=binary,
        pf=binary.astype(np.float32) * 10,
        feature_class=[FEATURE_CLASSES[p % len(FEATURE_CLASSES)] for p in range(P)],
        fine_grained=[FINE_GRAINED[p % len(FINE_GRAINED)] for p in range(P)],
        source="tiny",
    )


def features(binary: np.ndarray, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = np.abs(
        binary @ rng.standard_normal((binary.shape[1], width)) + rng.standard_normal((len(binary), width))
    )
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_decode_layer_schema_and_values():
    norms = tiny_norms()
    X = features(norms.binary, 24)
    table = decode_layer(X, norms, "resnet34", "layer1.0.conv1", 1, folds=5, seed=0)
    assert table.schema == decode.SCHEMA
    required = [
        "model",
        "layer",
        "layer_index",
        "property",
        "feature_class",
        "fine_grained",
        "fold",
        "f1",
        "precision",
        "recall",
        "n_pos_test",
    ]
    assert set(required) <= set(table.column_names)
    assert table.num_rows == 6 * 5
    df = table.to_pandas()
    assert (df["model"] == "resnet34").all() and (df["layer"] == "layer1.0.conv1").all()
    assert (df["layer_index"] == 1).all()
    assert df["property"].tolist() == [p for p in norms.properties for _ in range(5)]
    assert df["feature_class"].tolist() == [c for c in norms.feature_class for _ in range(5)]
    assert df["fine_grained"].tolist() == [c for c in norms.fine_grained for _ in range(5)]
    assert df["fold"].tolist() == list(range(5)) * 6
    assert df["f1"].between(0, 1).all() and df["precision"].between(0, 1).all()
    # positives per property are split over the folds
    assert df.groupby("property")["n_pos_test"].sum().tolist() == norms.binary.sum(axis=0).tolist()


def test_decode_layer_accepts_labels_with_keyword_metadata():
    norms = tiny_norms()
    X = features(norms.binary, 16, seed=1)
    a = decode_layer(X, norms, "m", "l", 0)
    b = decode_layer(
        X,
        norms.binary,
        model="m",
        layer="l",
        layer_index=0,
        properties=norms.properties,
        feature_class=norms.feature_class,
        fine_grained=norms.fine_grained,
        dtype=torch.float32,
    )
    assert a.equals(b)
    with pytest.raises(VspInputError, match="properties has 2 entries"):
        decode_layer(
            X,
            norms.binary,
            "m",
            "l",
            0,
            properties=["a", "b"],
            feature_class=norms.feature_class,
            fine_grained=norms.fine_grained,
        )
    with pytest.raises(VspInputError, match="concept rows"):
        decode_layer(X[:-1], norms, "m", "l", 0)


def hand_table() -> pa.Table:
    """Two layers x three properties; property a has 2 folds, b and c have 1 (to test fold-then-property)."""
    rows = [
        # model, layer, index, property, class, fine, fold, f1
        ("net", "conv1", 0, "a", "taxonomic", "is", 0, 0.2),
        ("net", "conv1", 0, "a", "taxonomic", "is", 1, 0.4),
        ("net", "conv1", 0, "b", "taxonomic", "has", 0, 0.6),
        ("net", "conv1", 0, "c", "functional", "does", 0, 0.9),
        ("net", "penultimate", 1, "a", "taxonomic", "is", 0, 0.5),
        ("net", "penultimate", 1, "a", "taxonomic", "is", 1, 0.7),
        ("net", "penultimate", 1, "b", "taxonomic", "has", 0, 0.8),
        ("net", "penultimate", 1, "c", "functional", "does", 0, 0.1),
    ]
    cols = list(zip(*rows, strict=True))
    names = ["model", "layer", "layer_index", "property", "feature_class", "fine_grained", "fold", "f1"]
    return pa.table({k: list(v) for k, v in zip(names, cols, strict=True)})


def test_aggregate_arithmetic():
    agg = aggregate(hand_table())
    assert list(agg.columns) == [
        "model",
        "layer_index",
        "layer",
        "penultimate",
        "grouping",
        "group",
        "f1",
        "n_properties",
    ]

    def get(layer, grouping, group):
        row = agg[(agg["layer"] == layer) & (agg["grouping"] == grouping) & (agg["group"] == group)]
        assert len(row) == 1
        return float(row["f1"].iloc[0]), int(row["n_properties"].iloc[0])

    # conv1: property means a = 0.3, b = 0.6, c = 0.9
    assert get("conv1", "feature_class", "taxonomic") == pytest.approx((0.45, 2))
    assert get("conv1", "feature_class", "functional") == pytest.approx((0.9, 1))
    assert get("conv1", "fine_grained", "is") == pytest.approx((0.3, 1))
    assert get("conv1", "fine_grained", "has") == pytest.approx((0.6, 1))
    assert get("conv1", "overall", "overall") == pytest.approx(
        (0.6, 3)
    )  # (0.3 + 0.6 + 0.9) / 3, not row mean
    # penultimate: a = 0.6, b = 0.8, c = 0.1
    assert get("penultimate", "feature_class", "taxonomic") == pytest.approx((0.7, 2))
    assert get("penultimate", "overall", "overall") == pytest.approx((0.5, 3))
    assert agg.loc[agg["layer"] == "penultimate", "penultimate"].all()
    assert not agg.loc[agg["layer"] == "conv1", "penultimate"].any()
    # a pandas DataFrame works too, and layer_kind marks the penultimate representation as well
    df = hand_table().to_pandas()
    df["layer"] = df["layer"].replace({"penultimate": "fc7"})
    df["layer_kind"] = np.where(df["layer"] == "fc7", "penultimate", "conv")
    agg2 = aggregate(df)
    assert agg2.loc[agg2["layer"] == "fc7", "penultimate"].all()
    assert np.allclose(agg2["f1"].to_numpy(), agg["f1"].to_numpy())


def test_baseline_table():
    base = baseline_table(aggregate(hand_table()))
    assert list(base.columns) == ["model", "taxonomic", "functional", "overall"]
    row = base.iloc[0]
    assert row["model"] == "net"
    assert row["taxonomic"] == pytest.approx(70.0)
    assert row["functional"] == pytest.approx(10.0)
    assert row["overall"] == pytest.approx(50.0)
    fine = baseline_table(hand_table(), grouping="fine_grained")  # raw rows are aggregated first
    assert fine.iloc[0]["has"] == pytest.approx(80.0)
    with pytest.raises(VspInputError, match="no penultimate"):
        baseline_table(hand_table().filter(pa.compute.not_equal(hand_table()["layer"], "penultimate")))


RESNET34 = ["conv1"] + [
    f"layer{s}.{b}.{m}"
    for s, blocks in ((1, 3), (2, 4), (3, 6), (4, 3))
    for b in range(blocks)
    for m in (["conv1", "conv2"] + (["downsample.0"] if b == 0 and s > 1 else []))
]


def test_residual_positions_resnet34():
    taps = list(enumerate(RESNET34))
    assert len(taps) == 36
    pos = residual_positions(taps)
    assert len(pos) == 16  # one per BasicBlock
    assert pos[:4] == [2.5, 4.5, 6.5, 9.5]  # layer2.0 closes after its downsample conv (index 9)
    assert pos[-1] == 35.5
    assert residual_positions([(0, "features.0"), (1, "features.3")]) == []


def synthetic_results() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    nets = {"alexnet": [f"features.{i}" for i in (0, 3, 6, 8, 10)], "resnet34": RESNET34}
    for model, layers in nets.items():
        for i, layer in enumerate([*layers, "penultimate"]):
            for p in range(12):
                for fold in range(2):
                    rows.append(
                        (
                            model,
                            layer,
                            i,
                            f"p{p}",
                            FEATURE_CLASSES[p % 5],
                            FINE_GRAINED[p % 6],
                            fold,
                            float(np.clip(0.2 + 0.01 * i + 0.05 * rng.standard_normal(), 0, 1)),
                        )
                    )
    names = ["model", "layer", "layer_index", "property", "feature_class", "fine_grained", "fold", "f1"]
    return pd.DataFrame(rows, columns=names)


@pytest.mark.parametrize("plot", [plot_figure1, plot_figure2])
def test_figures_are_written(tmp_path, plot):
    agg = aggregate(synthetic_results())
    out = tmp_path / f"{plot.__name__}.png"
    plot(agg, out)
    data = out.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000
    buf = io.BytesIO()  # file-like targets (the decode stage writes to the store from memory)
    plot(synthetic_results(), buf)  # raw rows are aggregated first
    assert buf.getvalue().startswith(PNG)


def test_figure_needs_conv_layers(tmp_path):
    only_pen = aggregate(hand_table())
    only_pen = only_pen[only_pen["penultimate"]]
    with pytest.raises(VspInputError, match="no convolutional-layer"):
        plot_figure1(only_pen, tmp_path / "x.png")


def test_penultimate_name_matches_networks():
    from vsp.extract.networks import PENULTIMATE

    assert decode.PENULTIMATE == PENULTIMATE


def test_aggregate_intervals_bracket_the_same_means_over_properties():
    df = synthetic_results()
    agg = aggregate(df)
    ivl = aggregate_intervals(df, n_resamples=499, seed=3)
    pd.testing.assert_frame_equal(ivl[agg.columns], agg)  # the means are aggregate()'s, to the bit
    assert (ivl["low"] <= ivl["f1"] + 1e-12).all() and (ivl["f1"] <= ivl["high"] + 1e-12).all()
    assert set(ivl["ci_method"]) == {"bootstrap-percentile"} and (ivl["n_resamples"] == 499).all()
    single = ivl["n_properties"] == 1
    assert (ivl.loc[single, "low"] == ivl.loc[single, "high"]).all()
    wide = ivl[ivl["n_properties"] >= 5]
    assert (wide["high"] > wide["low"]).all()
    again = aggregate_intervals(df, n_resamples=499, seed=3)
    pd.testing.assert_frame_equal(again, ivl)  # seeded: reproducible
