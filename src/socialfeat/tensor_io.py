"""Tensor files written through Python file objects, so that a full disk or a file-size limit is an OSError with
its errno — which :func:`socialfeat.errors.fixable_os_error` turns into one line — and not a library's wording
of it.

safetensors' ``save_file`` writes from Rust (``SafetensorError … File too large (os error 27)``) and
``torch.save`` swallows the failed write into ``RuntimeError … unexpected pos``; neither carries an errno.
Here safetensors serialises to bytes that Python writes, and ``torch.save`` writes through a wrapper that keeps
the OSError its file raised and raises it instead of torch's message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO


def write_safetensors(path: str | os.PathLike[str], tensors: dict[str, Any], framework: str = "pt") -> None:
    """``tensors`` (torch tensors, or numpy arrays with ``framework="numpy"``) as a safetensors file at ``path``.

    The file is serialised in memory first (one extra copy of the weights, transiently): the price of an OSError
    with its errno when the write fails."""
    if framework == "numpy":
        from safetensors.numpy import save
    else:
        from safetensors.torch import save
    data = save(tensors)
    with open(path, "wb") as fh:
        fh.write(data)


class _Recording:
    """A binary file that remembers the OSError a write or flush raised (torch replaces it with its own)."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self.fh.flush()
        except OSError as exc:
            self.error = exc
            raise


def write_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """``torch.save(obj)`` to ``path``; a failed write raises the file's OSError (errno, file name)."""
    import torch

    with open(path, "wb") as fh:
        recording = _Recording(fh)
        try:
            torch.save(obj, recording)  # type: ignore[arg-type]
        except RuntimeError:
            if recording.error is not None:
                error = recording.error
                if error.filename is None:
                    error.filename = str(Path(path))
                raise error from None
            raise
