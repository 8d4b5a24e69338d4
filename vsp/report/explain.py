"""Per-image explanations (paper Appendix B, Figures 3-7): which semantic properties each layer "sees".

For one network layer a **ridge map** is fitted from that layer's pooled vectors to the PF-valued property
space of the norms (``norms.pf``: production frequencies, 0 = absent, aligned to the feature store's concepts;
concepts the norms lack are left out). A new image goes through the same network with the run's weights, the
pooled vector of each chosen layer is mapped to a predicted property vector, and the ``top`` properties with
the largest predicted PF are listed with their CSLB feature class.

Training data (``train_on``)
    ``"concepts"`` (default, as Appendix B: the cross-modal map is trained on the concept embeddings): the
    per-concept vectors of the feature store (mean over the concept's images, L2-normalised), one row per
    concept. ``"images"``: every per-image pooled vector of every concept, each paired with its concept's PF
    vector (more samples than concepts, and the same kind of input as a new image). Either way every input
    row is **L2-normalised** before the map (per-image vectors at training and at prediction time), so
    per-image and per-concept inputs live on the same scale. The choice is part of a stored map's identity.

Ridge
    Multi-output ridge regression with an unpenalised intercept, solved in closed form through the thin SVD
    of the centred inputs (:func:`vsp.mapping.mappers.fit_ridge`; equal to
    ``sklearn.linear_model.Ridge(alpha)``).
    ``alpha="auto"`` (default) picks alpha from :data:`ALPHAS` by grouped 5-fold cross-validation over
    *concepts* (all images of a concept are held out together, so the choice rewards generalising to unseen
    concepts, as in Appendix B), scoring the mean cosine between predicted and gold property vectors; ties go
    to the larger alpha.

Layers
    ``layers`` takes 0-based **tap indices** -- the stored layer's ``index`` in the feature manifest, the
    ``layer_index`` of ``decode/results`` and the x axis of Figures 1-2 -- or module names
    (``layer1.0.conv1``), or ``penultimate``; mixed freely. With ``--layers all-conv`` (or ``paper``) the
    tap index of a ResNet34 conv is its position among the network's 36 ``nn.Conv2d`` in module order
    (counting the three 1x1 ``downsample`` convs), so the paper's layers ``3,15,27,35`` are
    ``layer1.1.conv1``, ``layer2.3.conv2``, ``layer3.5.conv1`` and ``layer4.2.conv2`` (35, the last conv).
    The layer must be in the feature store (the map is trained on it). Default: ResNet34's paper layers 3,
    15, 27, 35; for other networks four stored layers at the same relative depths. Every layer is shown as
    its number with the module beside it: ``35 (layer4.2.conv2)`` (:func:`layer_label`).

Caching
    A fitted map is saved in the store as ``explain/<model>/<layer>.npz`` (coefficients, intercept and a JSON
    header with its identity: ``train_on``, alpha request, digest of the norms and of the feature manifest;
    the header's ``source`` is the same ``train_on``). The
    next call with the same identity loads it instead of refitting; a different identity refits and replaces
    it. `vsp explain` also records each explained image as ``explain/examples/<name>.json`` and ``.png``, so
    `vsp report` can show them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from vsp.data.norms import FEATURE_CLASSES, Norms
from vsp.errors import VspInputError
from vsp.extract.features import FeatureStore, LayerInfo
from vsp.io.bookkeeping import digest
from vsp.io.store import Store
from vsp.linalg import l2_rows
from vsp.mapping.mappers import RidgeSVD, fit_ridge

log = logging.getLogger(__name__)

__all__ = [
    "ALPHAS",
    "CLASS_COLOURS",
    "PAPER_LAYERS",
    "TRAIN_ON",
    "Explanation",
    "LayerPrediction",
    "PropertyMap",
    "conv_layer_names",
    "default_model",
    "explain_images",
    "fit_property_map",
    "fit_ridge",
    "layer_label",
    "load_or_fit",
    "plot_explanation",
    "resolve_layers",
    "save_example",
    "select_alpha",
    "training_data",
]

ROOT = "explain"
FORMAT = 2  # 2: maps trained on concept vectors by default, identity key "train_on"
PENULTIMATE = "penultimate"
#: ridge strengths tried by ``alpha="auto"`` (inputs are L2-normalised rows)
ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
#: what the ridge maps can be trained on; the first is the default (Appendix B: the concept embeddings)
TRAIN_ON = ("concepts", "images")
#: the paper's layers (Appendix B): 0-based tap indices of ResNet34's 36 convs in module order (35: the last)
PAPER_LAYERS = {"resnet34": (3, 15, 27, 35)}
#: relative depths of the paper's layers (3, 15, 27, 35 of ResNet34's 0..35), used for other networks
_PAPER_DEPTHS = (3 / 35, 15 / 35, 27 / 35, 35 / 35)
#: one fixed colour per CSLB feature class (matplotlib's tab10 hues)
CLASS_COLOURS = {
    "taxonomic": "#1f77b4",
    "visual perceptual": "#ff7f0e",
    "other perceptual": "#9467bd",
    "functional": "#2ca02c",
    "encyclopaedic": "#d62728",
}


# ----------------------------------------------------------------------------------------------- ridge
# the solver is vsp.mapping.mappers.fit_ridge / RidgeSVD (re-exported here as fit_ridge)


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return np.einsum("ij,ij->i", a, b) / np.maximum(na * nb, 1e-12)


def select_alpha(
    X: np.ndarray,
    Y: np.ndarray,
    groups: np.ndarray,
    alphas: Sequence[float] = ALPHAS,
    folds: int = 5,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """Choose alpha by grouped K-fold CV over concepts: best mean cosine(pred, gold), ties -> larger alpha.

    Returns ``(alpha, {alpha: mean held-out cosine})``. With fewer than 3 groups the middle of ``alphas`` is
    used.
    """
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    alphas = sorted(float(a) for a in alphas)
    if n_groups < 3:
        mid = alphas[len(alphas) // 2]
        log.warning("only %d concepts: ridge alpha fixed at %g (no cross-validation)", n_groups, mid)
        return mid, {}
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    try:
        splitter = GroupKFold(n_splits=min(folds, n_groups), shuffle=True, random_state=seed)
    except TypeError:  # scikit-learn < 1.6 has no shuffle for GroupKFold
        splitter = GroupKFold(n_splits=min(folds, n_groups))
    totals = dict.fromkeys(alphas, 0.0)
    count = 0
    for tr, te in splitter.split(X, Y, groups):
        parts = RidgeSVD.fit(X[tr], Y[tr])
        for a in alphas:
            coef, b = parts.coef(a)
            totals[a] += float(_cosine_rows(X[te] @ coef + b, Y[te]).sum())
        count += len(te)
    scores = {a: totals[a] / count for a in alphas}
    best = max(alphas, key=lambda a: (round(scores[a], 10), a))
    return best, scores


# ------------------------------------------------------------------------------------------ property map
@dataclass
class PropertyMap:
    """A fitted ridge map from one layer's pooled vectors to the property space."""

    model: str
    layer: str
    source: str  # what it was trained on (``train_on``): "concepts" | "images"
    alpha: float
    coef: np.ndarray  # (C, P) float32
    intercept: np.ndarray  # (P,) float32
    properties: list[str]
    feature_class: list[str]
    fine_grained: list[str]
    n_train: int
    n_concepts: int
    identity: dict[str, Any] = field(default_factory=dict)
    cv_scores: dict[str, float] = field(default_factory=dict)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted PF vectors ``(n, P)`` for raw pooled vectors ``(n, C)`` (rows L2-normalised first)."""
        X = np.atleast_2d(np.asarray(X))
        if X.shape[1] != self.coef.shape[0]:
            raise VspInputError(
                f"{self.model}/{self.layer}: inputs have {X.shape[1]} channels, "
                f"the map expects {self.coef.shape[0]}"
            )
        return (l2_rows(X) @ self.coef.astype(np.float64) + self.intercept).astype(np.float32)

    def top(self, prediction: np.ndarray, k: int = 10) -> list[tuple[str, float, str, str]]:
        """The ``k`` largest entries of one predicted vector: ``(property, value, class, fine type)``."""
        v = np.asarray(prediction).ravel()
        order = np.argsort(-v, kind="stable")[: max(0, int(k))]
        return [(self.properties[j], float(v[j]), self.feature_class[j], self.fine_grained[j]) for j in order]

    # -- (de)serialisation ----------------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """Everything but the arrays (JSON-able): what the ``.npz`` file stores as its header."""
        d = {k: v for k, v in asdict(self).items() if k not in ("coef", "intercept")}
        d["format"] = FORMAT
        return d

    def to_bytes(self) -> bytes:
        """The map as ``.npz`` bytes (coefficients, intercept, JSON header); no pickle."""
        buf = io.BytesIO()
        np.savez(
            buf,
            coef=self.coef.astype(np.float32),
            intercept=self.intercept.astype(np.float32),
            header=np.array(json.dumps(self.header())),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> PropertyMap:
        """Read a map written by :meth:`to_bytes`."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            coef, intercept = np.asarray(z["coef"]), np.asarray(z["intercept"])
        header.pop("format", None)
        return cls(coef=coef, intercept=intercept, **header)


def map_path(model: str, layer: str) -> str:
    """Where the fitted map of one layer is cached in the store."""
    return f"{ROOT}/{model}/{layer}.npz"


def _norms_digest(norms: Norms) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([norms.concepts, norms.properties, norms.feature_class]).encode())
    h.update(np.ascontiguousarray(norms.pf, dtype=np.float32).tobytes())
    return h.hexdigest()


def _features_digest(fs: FeatureStore) -> str:
    man = fs.manifest()
    if man is None:
        raise FileNotFoundError(f"no features at {fs.store.uri}: run `vsp extract` first")
    return digest(man["identity"])


def _check_train_on(train_on: str) -> str:
    if train_on not in TRAIN_ON:
        raise VspInputError(f"train_on must be one of {', '.join(TRAIN_ON)}, got {train_on!r}")
    return train_on


def training_data(
    fs: FeatureStore, norms: Norms, model: str, layer: str, train_on: str = "concepts"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X, Y, groups)``: L2-normalised inputs, PF targets aligned to them, and each row's concept index.

    ``train_on``: ``"concepts"`` (one row per concept: the concept vectors) or ``"images"`` (one per image).
    """
    source = _check_train_on(train_on)
    concepts = fs.concepts()
    index = {c: i for i, c in enumerate(norms.concepts)}
    rows = [i for i, c in enumerate(concepts) if c in index]
    if len(rows) < 2:
        raise VspInputError(
            f"only {len(rows)} concepts of {fs.store.uri} are in the norms ({norms.source}); "
            "an explanation map needs at least 2"
        )
    pf = np.asarray(norms.pf, dtype=np.float64)[[index[concepts[i]] for i in rows]]
    if source == "concepts":
        X = fs.read(model, layer)[rows]
        keep = np.isfinite(X).all(axis=1)
        if not keep.all():
            raise VspInputError(
                f"{fs.store.uri}: layer {model}/{layer} has missing rows; finish `vsp extract` first"
            )
        return l2_rows(X), pf, np.arange(len(rows))
    imgs, counts = fs.read_images(model, layer)
    xs, ys, gs = [], [], []
    for g, r in enumerate(rows):
        block = imgs[r, : int(counts[r])]
        block = block[np.isfinite(block).all(axis=1)]
        if len(block) == 0:
            continue
        xs.append(block)
        ys.append(np.repeat(pf[g][None], len(block), axis=0))
        gs.append(np.full(len(block), g))
    if not xs:
        raise VspInputError(
            f"{fs.store.uri}: layer {model}/{layer} has no per-image vectors; finish `vsp extract`"
        )
    return l2_rows(np.concatenate(xs)), np.concatenate(ys), np.concatenate(gs)


def fit_property_map(
    fs: FeatureStore,
    norms: Norms,
    model: str,
    layer: str,
    train_on: str = "concepts",
    alpha: float | str = "auto",
) -> PropertyMap:
    """Fit the ridge map of one layer on ``train_on`` rows (alpha chosen by grouped CV when ``"auto"``)."""
    source = _check_train_on(train_on)
    X, Y, groups = training_data(fs, norms, model, layer, source)
    scores: dict[float, float] = {}
    if alpha == "auto":
        a, scores = select_alpha(X, Y, groups)
    else:
        a = float(alpha)
    coef, intercept = fit_ridge(X, Y, a)
    log.info(
        "%s/%s: ridge alpha %g on %d %s rows (%d concepts)",
        model,
        layer,
        a,
        len(X),
        source,
        len(np.unique(groups)),
    )
    return PropertyMap(
        model=model,
        layer=layer,
        source=source,
        alpha=a,
        coef=coef.astype(np.float32),
        intercept=intercept.astype(np.float32),
        properties=list(norms.properties),
        feature_class=list(norms.feature_class),
        fine_grained=list(norms.fine_grained),
        n_train=len(X),
        n_concepts=int(len(np.unique(groups))),
        identity={},
        cv_scores={str(k): v for k, v in scores.items()},
    )


def load_or_fit(
    store: Store,
    norms: Norms,
    model: str,
    layer: str,
    train_on: str = "concepts",
    alpha: float | str = "auto",
) -> tuple[PropertyMap, bool]:
    """The cached map of ``explain/<model>/<layer>.npz`` when its identity matches, else a new fit (saved).

    The identity is ``train_on``, the alpha request and digests of the norms and the feature manifest (and the
    file format). Returns ``(map, reused)``.
    """
    source = _check_train_on(train_on)
    fs = FeatureStore(store)
    identity = {
        "format": FORMAT,
        "train_on": source,
        "alpha": alpha if alpha == "auto" else float(alpha),
        "norms": _norms_digest(norms),
        "features": _features_digest(fs),
    }
    path = map_path(model, layer)
    if store.exists(path):
        try:
            cached = PropertyMap.from_bytes(store.read_bytes(path))
            if cached.identity == identity:
                log.info("reusing the map %s", store.key_uri(path))
                return cached, True
            log.info("%s was fitted with another configuration: refitting", store.key_uri(path))
        except (ValueError, KeyError, TypeError, OSError) as exc:
            log.warning("could not read %s (%s): refitting", store.key_uri(path), exc)
    pmap = fit_property_map(fs, norms, model, layer, source, alpha)
    pmap.identity = identity
    store.write_bytes(path, pmap.to_bytes())
    return pmap, False


# ---------------------------------------------------------------------------------------------- layers
def conv_layer_names(model: str) -> list[str]:
    """Every ``nn.Conv2d`` module name of a torchvision model, in module order (the ``all-conv`` order)."""
    import torch
    import torchvision
    from torch import nn

    from vsp.extract.networks import _check_model_name

    _check_model_name(model)
    try:
        with torch.device("meta"):  # the architecture only: no memory, no initialisation cost
            net = torchvision.models.get_model(model, weights=None)
    except Exception:  # noqa: BLE001 - a constructor that refuses the meta device: build it for real
        net = torchvision.models.get_model(model, weights=None)
    return [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]


def default_model(fs: FeatureStore) -> str:
    """``resnet34`` when the store has it (the paper's choice), else the store's first model."""
    models = list(dict.fromkeys(x.model for x in fs.layers()))
    if not models:
        raise VspInputError(f"{fs.store.uri}: the feature store has no layers")
    return "resnet34" if "resnet34" in models else models[0]


def layer_label(index: int, name: str) -> str:
    """How a layer is shown: its 0-based tap index with the module beside it, ``35 (layer4.2.conv2)``."""
    return f"{int(index)} ({name})"


def resolve_layers(
    spec: str | Sequence[str | int] | None, model: str, stored: Sequence[LayerInfo]
) -> list[tuple[str, str]]:
    """Turn a layer spec into ``[(module name, label)]`` of layers present in the store, in the given order.

    ``spec``: ``None`` (default layers, see the module docstring), ``"3,15,27,35"``, a list of ints and names,
    or names like ``"layer1.0.conv1"`` / ``"penultimate"``. Integers are 0-based tap indices: the stored
    layer's ``index`` (``layer_index`` of the decode results, the x axis of Figures 1-2). Labels are
    :func:`layer_label`'s ``"35 (layer4.2.conv2)"``.
    """
    mine = sorted((x for x in stored if x.model == model), key=lambda x: x.index)
    if not mine:
        raise VspInputError(f"the feature store has no layers of model {model!r}")
    index_of = {x.name: x.index for x in mine}
    by_index = {x.index: x.name for x in mine}

    def label(name: str) -> str:
        return layer_label(index_of[name], name)

    if spec is None or (isinstance(spec, str) and not spec.strip()):
        paper = PAPER_LAYERS.get(model)
        names: list[str] = []
        if paper:
            convs = conv_layer_names(model)
            names = [convs[k] for k in paper if k < len(convs)]
        if not paper or len(names) != len(paper) or not all(n in index_of for n in names):
            body = [x.name for x in mine if x.name != PENULTIMATE] or [x.name for x in mine]
            idx = sorted({int(round(f * (len(body) - 1))) for f in _PAPER_DEPTHS})
            names = [body[i] for i in idx]
        return [(n, label(n)) for n in names]
    tokens = [t.strip() for t in spec.split(",")] if isinstance(spec, str) else [str(t).strip() for t in spec]
    out: list[tuple[str, str]] = []
    for tok in (t for t in tokens if t):
        if re.fullmatch(r"\d+", tok):
            k = int(tok)
            if k not in by_index:
                lo, hi = mine[0], mine[-1]
                raise VspInputError(
                    f"layer {k}: no stored layer of {model} has tap index {k}; tap indices are 0-based, as "
                    f"layer_index in decode/results and Figures 1-2: {lo.index} = {lo.name} ... "
                    f"{hi.index} = {hi.name} ({len(mine)} stored layers)"
                )
            name = by_index[k]
        else:
            name = tok
        if name not in index_of:
            have = [x.name for x in mine]
            shown = ", ".join(have[:6]) + (", ..." if len(have) > 6 else "")
            raise VspInputError(
                f"layer {name!r} of {model} is not in the feature store "
                f"({len(have)} stored layers: {shown}); "
                "extract with --layers all-conv, or pick a stored layer"
            )
        if name not in [n for n, _ in out]:
            out.append((name, label(name)))
    if not out:
        raise VspInputError(f"empty layer selection {spec!r}")
    return out


# ------------------------------------------------------------------------------------------- explaining
@dataclass
class LayerPrediction:
    """The top properties predicted from one layer for one image."""

    layer: str
    label: str  # layer_label(): "35 (layer4.2.conv2)"
    properties: list[str]
    values: list[float]
    feature_class: list[str]
    fine_grained: list[str]


@dataclass
class Explanation:
    """Top-k predicted properties per layer for one image."""

    image: str
    model: str
    weights: str
    source: str  # what the maps were trained on (train_on): "concepts" | "images"
    layers: list[LayerPrediction]

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (what ``explain/examples/<name>.json`` holds)."""
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Explanation:
        """Rebuild from :meth:`to_json`."""
        d = dict(d)
        d["layers"] = [LayerPrediction(**x) for x in d["layers"]]
        return cls(**d)

    def to_text(self) -> str:
        """The printed form: one block per layer, rank, property, predicted PF, feature class."""
        lines = [f"{self.image}  ({self.model}, weights {self.weights}, map trained on {self.source})"]
        for lp in self.layers:
            lines.append(f"  {_shown_label(lp)}:")
            width = max((len(p) for p in lp.properties), default=10)
            for i, (p, v, c) in enumerate(zip(lp.properties, lp.values, lp.feature_class, strict=True), 1):
                lines.append(f"    {i:2d}. {p:<{width}}  {v:7.2f}  {c}")
        return "\n".join(lines)


def _shown_label(lp: LayerPrediction) -> str:
    """The label with the module beside it (labels of older explanations may lack it)."""
    return lp.label if lp.layer in lp.label else f"{lp.label} ({lp.layer})"


def _image_tensor(uri: str, preprocessing=None):
    from vsp.data.images import load_image, preprocess
    from vsp.data.preprocess import TORCHVISION

    img = load_image(uri)
    if preprocessing is None or preprocessing == TORCHVISION:
        return preprocess(img)
    return preprocessing.transform()(img)


def image_features(
    fs: FeatureStore, model: str, layers: Sequence[str], images: Sequence[str], device: str = "cpu"
) -> dict[str, np.ndarray]:
    """Pooled vectors ``layer -> (n_images, C)`` of new images with the run's network, weights and pooling."""
    import torch

    from vsp.extract.hooks import MultiNetExtractor, extract_images

    man = fs.manifest()
    if man is None:
        raise FileNotFoundError(f"no features at {fs.store.uri}: run `vsp extract` first")
    ident = man["identity"]
    cfg = ident["config"]
    modules = [x for x in layers if x != PENULTIMATE]
    if not modules:  # the extractor needs one module tap; take the first stored one and ignore it
        modules = [next(x.name for x in fs.layers() if x.model == model and x.name != PENULTIMATE)]
    spec = ident.get("sources", {}).get(model, {}).get("spec", model)  # timm:/open_clip:/hf: models
    weights = cfg["weights"]
    if not isinstance(weights, str):  # per model: keyed by the spec the run file names (or the group)
        weights = weights.get(spec, weights.get(model))
    with MultiNetExtractor(
        [spec],
        layers=modules,
        weights=weights,
        seed=int(cfg.get("seed", 0)),
        device=device,
        pooling=cfg.get("pooling", "max"),
        activation=cfg.get("activation", "conv"),  # the store's activation point, so features match
        penultimate=PENULTIMATE in layers,
    ) as ext:
        want = ident.get("weights_identity", {}).get(model)
        got = ext.weights_identity[model]
        if want is not None and got != want:
            raise VspInputError(
                f"{model}: the feature store was extracted with weights {want}, "
                f"but {weights!r} now loads {got}; "
                "explanations need the run's own weights"
            )
        batch = torch.stack([_image_tensor(u, ext.preprocessing[model]) for u in images])
        feats = extract_images(ext, batch, batch_size=16)[model]
    return {name: feats[name] for name in layers}


def explain_images(
    store: Store,
    norms: Norms,
    images: Sequence[str | os.PathLike],
    model: str | None = None,
    layers: str | Sequence[str | int] | None = None,
    top: int = 10,
    train_on: str = "concepts",
    alpha: float | str = "auto",
    device: str = "cpu",
) -> list[Explanation]:
    """Explain each image: top-``top`` predicted properties at each chosen layer (maps fitted or reused).

    ``layers``: see :func:`resolve_layers` (0-based tap indices or names); ``train_on``: ``"concepts"``
    (default, Appendix B) or ``"images"``.
    """
    source = _check_train_on(train_on)
    if top < 1:
        raise VspInputError(f"top must be >= 1, got {top}")
    if not images:
        raise VspInputError("no images to explain")
    fs = FeatureStore(store)
    model = model or default_model(fs)
    chosen = resolve_layers(layers, model, fs.layers())
    maps = {name: load_or_fit(store, norms, model, name, source, alpha)[0] for name, _ in chosen}
    uris = [os.fspath(u) for u in images]
    feats = image_features(fs, model, [n for n, _ in chosen], uris, device)
    weights = (fs.manifest() or {}).get("identity", {}).get("weights_identity", {}).get(model, "?")
    out = []
    for i, uri in enumerate(uris):
        per_layer = []
        for name, lab in chosen:
            pmap = maps[name]
            top_k = pmap.top(pmap.predict(feats[name][i : i + 1])[0], top)
            per_layer.append(
                LayerPrediction(
                    layer=name,
                    label=lab,
                    properties=[t[0] for t in top_k],
                    values=[t[1] for t in top_k],
                    feature_class=[t[2] for t in top_k],
                    fine_grained=[t[3] for t in top_k],
                )
            )
        out.append(Explanation(image=uri, model=model, weights=weights, source=source, layers=per_layer))
    return out


# ---------------------------------------------------------------------------------------------- figure
def _network_view(uri: str):
    """The image as the network sees it: shorter side 256, centre crop 224 (before normalisation)."""
    from torchvision.transforms import CenterCrop, Resize

    from vsp.data.images import CROP, RESIZE, load_image

    return CenterCrop(CROP)(Resize(RESIZE)(load_image(uri)))


_TRAINED_ON = {"concepts": "the concept vectors", "images": "every image's vector"}

#: Every text of the figure is plain text: a `$` in a property or file name is a dollar sign, not mathtext
#: (and a user's ``text.usetex`` setting never sends the names through LaTeX).
PLAIN_TEXT_RC = {"text.usetex": False, "text.parse_math": False}


def explanation_figure(expl: Explanation, image: Any = None, dpi: int = 100):  # -> matplotlib Figure
    """The figure of `plot_explanation` (the image, then one bar chart per layer), not yet drawn.

    Names are rendered as plain text (`PLAIN_TEXT_RC`); save it inside
    ``matplotlib.rc_context(PLAIN_TEXT_RC)`` so that text artists made at draw time are plain as well.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    plain = {"parse_math": False, "usetex": False}
    with matplotlib.rc_context(PLAIN_TEXT_RC):
        n_layers = len(expl.layers)
        bar_cols = max(1, min(n_layers, 2) if n_layers <= 4 else 3)
        nrows = max(1, -(-n_layers // bar_cols))
        fig = Figure(figsize=(4.2 + 5.0 * bar_cols, 3.6 * nrows + 0.7), dpi=dpi, layout="constrained")
        FigureCanvasAgg(fig)
        grid = fig.add_gridspec(nrows, bar_cols + 1, width_ratios=[0.85] + [1.0] * bar_cols)
        ax = fig.add_subplot(grid[:, 0])  # the image spans every row of the first column
        bars = [fig.add_subplot(grid[r, 1 + c]) for r in range(nrows) for c in range(bar_cols)]
        try:
            view = image if image is not None else _network_view(expl.image)
            ax.imshow(np.asarray(view))
        except (OSError, VspInputError) as exc:
            msg = f"image unavailable:\n{exc}"
            ax.text(0.5, 0.5, msg, ha="center", va="center", wrap=True, fontsize=8, **plain)
        ax.set_title(Path(expl.image).name, fontsize=10, **plain)
        ax.set_axis_off()
        present: list[str] = []
        letters = "abcdefghijklmnopqrstuvwxyz"
        for i, lp in enumerate(expl.layers):
            ax = bars[i]
            y = np.arange(len(lp.properties))[::-1]
            colours = [CLASS_COLOURS.get(c, "#7f7f7f") for c in lp.feature_class]
            ax.barh(y, lp.values, color=colours, edgecolor="none")
            ax.set_yticks(y, [p.replace("_", "/") for p in lp.properties], fontsize=8, **plain)
            ax.tick_params(axis="x", labelsize=8)
            ax.set_xlabel("predicted production frequency", fontsize=8)
            ax.axvline(0, color="#444444", linewidth=0.6)
            name = _shown_label(lp)
            name = f"layer {name}" if name[:1].isdigit() else name
            ax.set_title(f"({letters[i % 26]}) {expl.model} {name}", fontsize=10, **plain)
            for c in lp.feature_class:
                if c not in present:
                    present.append(c)
        for ax in bars[n_layers:]:
            ax.set_axis_off()
        order = [c for c in FEATURE_CLASSES if c in present]
        order += [c for c in present if c not in FEATURE_CLASSES]
        handles = [Patch(color=CLASS_COLOURS.get(c, "#7f7f7f"), label=c) for c in order]
        if handles:
            fig.legend(
                handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False
            )
        fig.suptitle(
            f"Top property predictions per layer ({expl.model}, weights {expl.weights}; "
            f"maps trained on {_TRAINED_ON.get(expl.source, expl.source)})",
            fontsize=11,
            **plain,
        )
    return fig


def plot_explanation(
    expl: Explanation, out: str | os.PathLike | BinaryIO, image: Any = None, dpi: int = 100
) -> None:
    """Write a PNG in the style of the paper's Figures 4-7: the image, then one bar chart per layer.

    Bars are the top predicted PF values (largest on top), coloured by feature class, with one legend for the
    classes shown. ``image`` (a PIL image) overrides loading ``expl.image``. Property, layer and file names
    are plain text (a `$` is a dollar sign).
    """
    import matplotlib

    fig = explanation_figure(expl, image=image, dpi=dpi)
    if isinstance(out, str | os.PathLike):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(PLAIN_TEXT_RC):
        fig.savefig(out, format="png")


def figure_bytes(expl: Explanation, image: Any = None) -> bytes:
    """The explanation figure as PNG bytes."""
    buf = io.BytesIO()
    plot_explanation(expl, buf, image=image)
    return buf.getvalue()


def _slug(expl: Explanation) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(expl.image).stem)[:40].strip("-") or "image"
    digest = hashlib.sha256(f"{expl.image}|{expl.model}".encode()).hexdigest()[:8]
    return f"{stem}-{expl.model}-{digest}"


def save_example(store: Store, expl: Explanation, png: bytes) -> str:
    """Record an explanation in the store (``explain/examples/<name>.json`` + ``.png``) for `vsp report`."""
    key = f"{ROOT}/examples/{_slug(expl)}"
    store.write_bytes(f"{key}.png", png)
    store.write_json(f"{key}.json", expl.to_json())
    return key
