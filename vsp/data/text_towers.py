"""The text encoder of a CLIP / SigLIP checkpoint as a source of word vectors, beside GloVe.

``meta.text`` (``vsp meta --text``) may name a text tower instead of GloVe, so that multimodal rows can pair a
checkpoint's image tower (`vsp.extract.sources`) with its own text tower:

- ``open_clip:<arch>:<tag>``: ``open_clip.create_model(arch, pretrained=tag)``, its tokenizer
  (``open_clip.get_tokenizer``) and ``encode_text`` (the projected text embedding). Without a tag the tower
  has seeded random weights (seed 0; for tests and dry runs, and logged as such).
- ``hf:<repository id or folder>``: ``transformers.AutoModel`` and ``AutoTokenizer`` of a dual image-text
  checkpoint (CLIP, SigLIP): ``get_text_features`` (the projected text embedding).

Each word the concept names ask for (`vsp.data.text.concept_vocabulary`) is encoded on its own, underscores
read as spaces (``ice_cream`` -> "ice cream"), so a tower covers every concept and the coverage is reported as
for GloVe. Words are encoded in batches on the CPU; the vectors are float32 as the tower outputs them (the
multimodal rows L2-normalise them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from vsp.data.text import WordVectors
from vsp.errors import VspInputError

log = logging.getLogger(__name__)

TOWER_FAMILIES = ("open_clip", "hf")
BATCH = 256


def is_text_tower(source: object) -> bool:
    """Whether ``source`` names a text tower (``open_clip:...`` / ``hf:...``) rather than a vectors file."""
    family, sep, rest = str(source).partition(":")
    return bool(sep) and family in TOWER_FAMILIES and bool(rest) and not rest.startswith("//")


def _open_clip_encoder(spec: str, seed: int):
    from vsp.extract.sources import _seeded, require

    open_clip = require("open_clip")
    arch, _, tag = spec.partition(":")
    if arch not in open_clip.list_models():
        raise VspInputError(
            f"text tower open_clip:{spec}: unknown OpenCLIP architecture (open_clip.list_models())"
        )
    try:
        if tag:
            model = open_clip.create_model(arch, pretrained=tag, require_pretrained=True)
        else:
            log.warning("text tower open_clip:%s has no pretrained tag: random weights (seed %d)", arch, seed)
            model = _seeded(seed, lambda: open_clip.create_model(arch, pretrained=None))
        tokenizer = open_clip.get_tokenizer(arch)
    except VspInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - download / cache failures
        raise VspInputError(
            f"text tower open_clip:{spec}: could not load it ({type(exc).__name__}: {exc}); offline machines "
            "need the weights and tokenizer in the Hugging Face cache (HF_HOME)"
        ) from exc
    model.eval()

    def encode(texts: list[str]) -> torch.Tensor:
        return model.encode_text(tokenizer(texts))

    return encode


def _hf_encoder(spec: str):
    from vsp.extract.sources import require

    require("hf")
    from transformers import AutoModel, AutoTokenizer

    folder = Path(spec).expanduser()
    local = folder.is_dir()
    where = str(folder) if local else spec
    try:
        model = AutoModel.from_pretrained(where, local_files_only=local).eval()
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local)
    except Exception as exc:  # noqa: BLE001 - missing repository, no cache
        raise VspInputError(
            f"text tower hf:{spec}: could not load it with transformers ({type(exc).__name__}: {exc}); a "
            "repository must be in the Hugging Face cache (HF_HOME) on an offline machine"
        ) from exc
    if not hasattr(model, "get_text_features"):
        raise VspInputError(
            f"text tower hf:{spec}: {type(model).__name__} has no text tower (get_text_features); name a "
            "dual "
            "image-text checkpoint such as CLIP or SigLIP"
        )
    pad = "max_length" if getattr(model.config, "model_type", "").startswith("siglip") else True

    def encode(texts: list[str]) -> torch.Tensor:
        batch = tokenizer(texts, padding=pad, truncation=True, return_tensors="pt")
        out = model.get_text_features(**batch)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    return encode


def load_tower_vectors(source: str, vocab: Iterable[str] | None, seed: int = 0) -> WordVectors:
    """Encode ``vocab`` with the text tower ``source`` names (module docstring) as a word -> vector table."""
    if vocab is None:
        raise VspInputError(f"text tower {source}: needs the words to encode (the concepts' vocabulary)")
    family, _, spec = str(source).partition(":")
    encode = _open_clip_encoder(spec, seed) if family == "open_clip" else _hf_encoder(spec)
    words = sorted(set(vocab))
    rows = []
    with torch.inference_mode():
        for i in range(0, len(words), BATCH):
            texts = [w.replace("_", " ") for w in words[i : i + BATCH]]
            rows.append(encode(texts).float().cpu().numpy())
    matrix = np.concatenate(rows) if rows else np.zeros((0, 1), dtype=np.float32)
    log.info("text tower %s: %d words, %d dims", source, len(words), matrix.shape[1])
    return WordVectors(words, matrix.astype(np.float32), str(source))
