"""The paper's published numbers (Tables 1-4) as data, and the names that match a run's rows to them.

Source: the paper in ``../shared/paper/`` (Table 1: ResNet decodability per feature class; Table 2: zero-shot
mapping Hit@T; Table 3: Spearman rho on MEN / SimLex-999; Table 4 (Appendix A): decodability for all four
networks). Numbers are copied as printed (F1 x 100, Hit@T in percent, rho); ``1ToN Meta ResNet`` on SimLex is
printed as ``0.32`` and kept so.

"Overall" in Tables 1 and 4 is the mean F1 over all 390 properties: 11 of the 12 rows equal (to the printed
0.01) their class means weighted by the classes' property counts (encyclopaedic 65, functional 94,
taxonomic 46, visual perceptual 156, other perceptual 29). The exception is the plain ResNet row, whose 44.05
is the unweighted mean of its five class means (44.058; the property-weighted mean is 43.37); it is kept as
printed.

Embedding keys
--------------
Every row is keyed by a canonical embedding key :func:`embedding_key` ``(model, kind, text)``:

- ``model``: the torchvision name of the image network (``alexnet``, ``vgg16``, ``resnet34``,
  ``densenet169``), or ``None`` for a text-only embedding;
- ``kind``: ``"penultimate"`` (the classifier input, the paper's plain "ResNet" row), ``"svd"`` (SVD meta),
  ``"1ton"`` (1ToN meta) or ``"text"`` (GloVe alone);
- ``text``: whether GloVe is concatenated (the multimodal rows).

:func:`canonical_embedding` turns a run's free-form embedding name (``"resnet34/penultimate"``,
``"svd_meta:resnet34"``, ``"1ToN Meta ResNet + GloVe"``, ``"glove"``...) into such a key, so the report can
put the paper's number next to the run's without the stages agreeing on one spelling.

What "the paper's setup" means (:data:`PAPER_SETUP`): ImageNet-pretrained torchvision weights, global max
pooling, the CSLB norms filtered to 638 concepts x 390 properties (PF >= 5, >= 5 concepts), all 638
concepts with images. Text rows used spaCy's 300-d GloVe (``en_core_web_lg``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "CLASS_COLUMNS",
    "HIT_COLUMNS",
    "MAPPERS",
    "PAPER_MODELS",
    "PAPER_SETUP",
    "SIMILARITY_COLUMNS",
    "TABLE1",
    "TABLE2",
    "TABLE3",
    "TABLE4",
    "EmbeddingKey",
    "SetupCheck",
    "canonical_embedding",
    "embedding_key",
    "embedding_label",
    "paper_setup",
]

PAPER_MODELS = ("alexnet", "vgg16", "resnet34", "densenet169")
#: Column order of Tables 1 and 4: the CSLB feature classes as in vsp.data.norms, then "overall", the mean F1
#: over all properties (see the module docstring: what 11 of the paper's 12 rows show).
CLASS_COLUMNS = (
    "encyclopaedic",
    "functional",
    "taxonomic",
    "visual perceptual",
    "other perceptual",
    "overall",
)
MAPPERS = ("knn", "ridge", "mlp")
HIT_COLUMNS = ("hit1", "hit5", "hit10", "hit20")
SIMILARITY_COLUMNS = ("MEN", "SimLex-999")

PAPER_SETUP = {
    "weights": "imagenet",
    "pooling": "max",
    "norms_concepts": 638,
    "norms_properties": 390,
    "text": "spaCy GloVe, 300-d (en_core_web_lg)",
    "men_pairs": 104,
    "simlex_pairs": 48,
}


class EmbeddingKey(NamedTuple):
    """Canonical identity of an embedding: image network (or None), kind, and whether GloVe is appended."""

    model: str | None
    kind: str  # "penultimate" | "svd" | "1ton" | "text"
    text: bool


def embedding_key(model: str | None, kind: str = "penultimate", text: bool = False) -> EmbeddingKey:
    """Build a key (``kind="text"`` implies ``model=None, text=True``)."""
    if kind == "text":
        return EmbeddingKey(None, "text", True)
    return EmbeddingKey(model, kind, text)


_MODEL_LABEL = {"alexnet": "AlexNet", "vgg16": "VGG", "resnet34": "ResNet", "densenet169": "DenseNet"}
_KIND_LABEL = {"penultimate": "", "svd": "SVD Meta ", "1ton": "1ToN Meta "}


def embedding_label(key: EmbeddingKey) -> str:
    """The paper's row label, e.g. ``"SVD Meta ResNet + GloVe"``; other networks keep their own names."""
    if key.kind == "text":
        return "GloVe"
    base = _KIND_LABEL.get(key.kind, f"{key.kind} ") + _MODEL_LABEL.get(key.model or "", key.model or "?")
    return f"{base} + GloVe" if key.text else base


_MODEL_RE = re.compile(
    r"(alexnet|vgg\d*(?:_bn)?|wide_resnet\d+_\d+|resnext\d+_\w+?(?=[^a-z0-9_]|$)|resnet\d*|densenet\d*|googlenet"
    r"|inception_v3|squeezenet\d_\d|shufflenet_v2_x\d_\d|mobilenet_v\d\w*?(?=[^a-z0-9_]|$)|mnasnet\d_\d+"
    r"|efficientnet_\w\d?|regnet_\w+?(?=[^a-z0-9_]|$)|convnext_\w+?(?=[^a-z0-9_]|$)|vit_\w+?(?=[^a-z0-9_]|$)"
    r"|swin_\w+?(?=[^a-z0-9_]|$)|maxvit_t)"
)
_PAPER_ALIASES = {"resnet": "resnet34", "vgg": "vgg16", "densenet": "densenet169"}


def canonical_embedding(name: str, model_hint: str | None = None) -> EmbeddingKey | None:
    """Map a run's embedding name to an :class:`EmbeddingKey`; ``None`` when it cannot be recognised.

    Rules (case-insensitive): ``1ton``/``onetoN``/``one_to_n``/``1-to-n`` -> 1ToN meta; ``svd`` -> SVD meta;
    ``glove``/``text``/``word`` with no image part -> text only; with an image part (a network name, a meta
    kind, ``multimodal`` or ``+``) -> multimodal. The network is the first torchvision-like name in the string
    (``model_hint`` when there is none); the paper's spellings ``ResNet``, ``VGG``, ``DenseNet`` (without a
    depth) mean resnet34, vgg16, densenet169. ``penultimate`` and anything else -> the penultimate kind.
    """
    s = str(name).strip().lower()
    if not s:
        return None
    compact = re.sub(r"[\s_\-]+", "", s)
    if "1ton" in compact or "oneton" in compact or "onetoen" in compact:
        kind = "1ton"
    elif "svd" in compact:
        kind = "svd"
    else:
        kind = "penultimate"
    multimodal = "multimodal" in s
    texty = multimodal or any(
        w in s for w in ("glove", "text", "word2vec", "fasttext", "word vec", "wordvec")
    )
    m = _MODEL_RE.search(s.replace("meta", " "))
    model = m.group(1) if m else None
    image_part = model is not None or kind != "penultimate" or multimodal or "+" in s or "penultimate" in s
    if texty and not image_part:
        return EmbeddingKey(None, "text", True)
    if model is None and model_hint:
        model = str(model_hint).strip().lower() or None
    if model in _PAPER_ALIASES:
        model = _PAPER_ALIASES[model]
    if model is None:
        return None
    return EmbeddingKey(model, kind, texty)


def _k(model: str | None, kind: str = "penultimate", text: bool = False) -> EmbeddingKey:
    return embedding_key(model, kind, text)


def _classes(*values: float) -> dict[str, float]:
    return dict(zip(CLASS_COLUMNS, values, strict=True))


#: Table 4 (Appendix A): average cross-validation F1 x 100 per feature class, all four networks.
TABLE4: dict[EmbeddingKey, dict[str, float]] = {
    _k("alexnet"): _classes(20.86, 21.91, 36.90, 32.00, 27.07, 27.92),
    _k("alexnet", "svd"): _classes(27.68, 27.81, 56.65, 42.09, 37.62, 37.63),
    _k("alexnet", "1ton"): _classes(28.40, 27.16, 54.84, 41.67, 34.78, 37.00),
    _k("vgg16"): _classes(25.90, 28.74, 49.80, 39.29, 33.34, 35.31),
    _k("vgg16", "svd"): _classes(32.51, 34.14, 64.27, 48.26, 42.72, 43.71),
    _k("vgg16", "1ton"): _classes(33.16, 34.93, 64.48, 48.71, 44.47, 44.34),
    _k("resnet34"): _classes(33.09, 35.97, 61.56, 46.84, 42.83, 44.05),
    _k("resnet34", "svd"): _classes(32.68, 35.92, 68.12, 50.19, 48.22, 45.80),
    _k("resnet34", "1ton"): _classes(34.44, 37.45, 66.77, 51.28, 48.25, 46.74),
    _k("densenet169"): _classes(16.66, 18.02, 31.71, 24.40, 23.07, 22.34),
    _k("densenet169", "svd"): _classes(28.44, 30.35, 59.16, 43.10, 37.88, 39.09),
    _k("densenet169", "1ton"): _classes(31.10, 32.61, 59.86, 45.64, 41.13, 41.42),
}

#: Table 1: the ResNet rows of Table 4 (penultimate layer, SVD meta, 1ToN meta).
TABLE1: dict[EmbeddingKey, dict[str, float]] = {k: v for k, v in TABLE4.items() if k.model == "resnet34"}


def _hits(*values: float) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for i, mapper in enumerate(MAPPERS):
        out[mapper] = dict(zip(HIT_COLUMNS, values[4 * i : 4 * i + 4], strict=True))
    return out


#: Table 2: zero-shot mapping, Hit@T in percent, per mapper (kNN k=5, ridge, MLP h=1200).
TABLE2: dict[EmbeddingKey, dict[str, dict[str, float]]] = {
    _k("resnet34"): _hits(1.95, 29.3, 50.0, 69.1, 5.80, 29.1, 44.8, 61.9, 3.23, 42.0, 60.06, 75.5),
    _k("resnet34", "svd"): _hits(2.04, 28.3, 50.7, 68.6, 4.92, 43.2, 61.0, 75.3, 2.79, 45.1, 62.4, 76.5),
    _k("resnet34", "1ton"): _hits(2.76, 29.3, 53.4, 71.8, 5.92, 41.4, 58.4, 74.6, 2.82, 44.1, 61.4, 76.0),
    _k(None, "text"): _hits(1.76, 27.3, 53.8, 70.6, 7.18, 38.9, 56.6, 71.1, 5.14, 44.0, 62.0, 76.7),
    _k("resnet34", text=True): _hits(2.38, 31.7, 59.0, 76.7, 8.87, 43.6, 60.6, 75.5, 6.74, 50.8, 69.5, 82.6),
    _k("resnet34", "svd", True): _hits(
        2.32, 31.6, 58.8, 76.4, 8.88, 43.8, 60.8, 75.6, 6.24, 51.9, 71.1, 83.0
    ),
    _k("resnet34", "1ton", True): _hits(
        2.60, 32.3, 60.3, 78.8, 8.18, 48.1, 66.1, 80.6, 5.08, 52.6, 70.9, 83.7
    ),
}


def _rho(men: float, simlex: float) -> dict[str, float]:
    return {"MEN": men, "SimLex-999": simlex}


#: Table 3: Spearman rho with MEN (104 pairs) and SimLex-999 (48 pairs).
TABLE3: dict[EmbeddingKey, dict[str, float]] = {
    _k("resnet34"): _rho(0.540, 0.324),
    _k("resnet34", "svd"): _rho(0.555, 0.360),
    _k("resnet34", "1ton"): _rho(0.683, 0.32),
    _k(None, "text"): _rho(0.804, 0.210),
    _k("resnet34", text=True): _rho(0.829, 0.322),
    _k("resnet34", "svd", True): _rho(0.829, 0.316),
    _k("resnet34", "1ton", True): _rho(0.846, 0.491),
}


# ----------------------------------------------------------------------------------------- setup check
@dataclass
class SetupCheck:
    """Whether a run's setup is the paper's (:func:`paper_setup`), and if not, why: the one setup check.

    Only the report compares a run with the paper; the stages print and store their own numbers only.
    """

    matches: bool
    reasons: list[str]
    facts: dict[str, Any] = field(default_factory=dict)

    def why_not(self) -> str:
        """The reasons, as one sentence."""
        return "; ".join(self.reasons)

    def allows(self, key: EmbeddingKey | None) -> bool:
        """Whether the run's row with this key gets the paper's numbers (a matching setup, a known row)."""
        return self.matches and key is not None

    def note(self) -> str:
        """One line: what the paper column covers, or why it is omitted."""
        if self.matches:
            return "setup matches the paper's: paper numbers in brackets"
        return f"paper column omitted: {self.why_not()}"


def paper_setup(
    features_manifest: dict | None, norms_shape: tuple[int, int] | None, n_shared: int | None
) -> SetupCheck:
    """Compare a run with the paper's setup (:data:`PAPER_SETUP`).

    ``norms_shape``: (concepts, properties) of the filtered norms, when known; ``n_shared``: how many of the
    norms' concepts have features.
    """
    want = PAPER_SETUP
    reasons: list[str] = []
    facts: dict[str, Any] = {}
    if not features_manifest:
        return SetupCheck(False, ["the store has no feature manifest (`vsp extract` not run)"], facts)
    ident = features_manifest.get("identity", {})
    cfg = ident.get("config", {})
    weights = cfg.get("weights")
    ids = ident.get("weights_identity", {}) or {}
    facts["weights"] = weights
    bad = [m for m, i in ids.items() if "IMAGENET" not in str(i).upper()]
    if weights != "imagenet" or bad:
        shown = ", ".join(f"{m}: {ids.get(m, weights)}" for m in (bad or list(ids))) or str(weights)
        reasons.append(
            f"weights are not ImageNet-pretrained ({shown}); the paper used torchvision's ImageNet weights"
        )
    if cfg.get("pooling", "max") != want["pooling"]:
        reasons.append(f"pooling is {cfg.get('pooling')!r}; the paper used global max pooling")
    reasons += _layer_reasons(ident, facts)
    if norms_shape is None:
        reasons.append("the norms are unknown (pass --norms, or run `vsp decode` first)")
    else:
        facts["norms_shape"] = norms_shape
        if tuple(norms_shape) != (want["norms_concepts"], want["norms_properties"]):
            reasons.append(
                f"the norms have {norms_shape[0]} concepts x {norms_shape[1]} properties; "
                "the paper's filtered "
                f"CSLB norms have {want['norms_concepts']} x {want['norms_properties']}"
            )
    if n_shared is not None:
        facts["concepts_with_features"] = n_shared
        paper_norms = norms_shape is not None and tuple(norms_shape) == (
            want["norms_concepts"],
            want["norms_properties"],
        )
        if n_shared < want["norms_concepts"] and paper_norms:
            reasons.append(
                f"features cover {n_shared} of the norms' concepts; "
                f"the paper used all {want['norms_concepts']}"
            )
    return SetupCheck(not reasons, reasons, facts)


def _layer_reasons(ident: dict, facts: dict[str, Any]) -> list[str]:
    """Why the run's layer selection is not the paper's (section 3.2), if it is not; notes the activation.

    ``paper`` is the paper's; ``all-conv`` is the same taps for every network except DenseNet (168 convs,
    82 of them 1x1 bottlenecks, instead of the first conv, each dense layer and each transition: 86).
    """
    cfg = ident.get("config", {})
    sel = cfg.get("layers", "all-conv")
    facts["layers"] = sel
    facts["activation"] = cfg.get("activation", "conv")  # the paper does not say: recorded, not judged
    stored = ident.get("layers", []) or []
    models = list(cfg.get("models") or ident.get("weights_identity") or {x.get("model") for x in stored})
    if sel == "paper":
        return []
    hint = "the paper tapped every conv layer, but for DenseNet the first conv, each dense layer and each "
    hint += "transition (--layers paper)"
    if sel == "all-conv":
        dense = [m for m in models if str(m).startswith("densenet")]
        if not dense:
            return []
        taps = {m: sum(x.get("model") == m and x.get("kind") != "penultimate" for x in stored) for m in dense}
        shown = ", ".join(f"{m}: {n} convs" if n else m for m, n in taps.items())
        return [f"layer selection is 'all-conv' ({shown}); {hint}"]
    return [f"layer selection is {sel!r}; {hint}"]
