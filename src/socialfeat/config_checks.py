"""Checks every config value passes beyond its field's own bounds: a number is a number (YAML's ``true`` is not 1),
no integer reaches sizes no stage can allocate or seed with, and ``train.finetune`` has a form a backbone can use.

Kept apart from ``config`` so that module stays the list of settings; it calls these from its validators.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ValidationInfo, field_validator

MAX_INT = 2**31 - 1  # the largest integer a setting takes: a seed faiss and implicit accept, a count numpy can index
MAX_FINETUNE_BLOCKS = 100  # more than any timm backbone has (ViT-g: 40 blocks); the backbone's own count is checked
FINETUNE = re.compile(r"last-(\d+)")


def _unwrap(annotation: Any) -> Any:
    """``int | None`` → ``int``; ``Annotated[float, ...]`` → ``float``; anything else as it is."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def check_numbers(value: Any, annotation: Any) -> Any:
    """``value`` unchanged, or ValueError when a number is expected (in the field, or in its list or mapping) and a
    boolean is given, which pydantic would read as 1 or 0; or when an integer is beyond :data:`MAX_INT`."""
    annotation = _unwrap(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in (int, float):
        if isinstance(value, bool):
            kind = "an integer" if annotation is int else "a number"
            raise ValueError(f"expected {kind}, not true or false")
        if annotation is int and isinstance(value, int) and abs(value) > MAX_INT:
            raise ValueError(f"expected an integer of at most {MAX_INT:,}")
    elif origin is list and args and isinstance(value, list):
        for item in value:
            check_numbers(item, args[0])
    elif origin is dict and len(args) == 2 and isinstance(value, dict):
        for item in value.values():
            check_numbers(item, args[1])
    return value


def check_finetune(spec: str) -> str:
    """``all``, ``head`` or ``last-N`` with N from 1 to :data:`MAX_FINETUNE_BLOCKS`: a form is refused at once,
    not after the image cache is built; whether the backbone has N blocks is checked when it is built."""
    match = FINETUNE.fullmatch(spec)
    if spec in ("all", "head") or (match and 1 <= int(match.group(1)) <= MAX_FINETUNE_BLOCKS):
        return spec
    raise ValueError(
        f"expected all, head, or last-1 to last-{MAX_FINETUNE_BLOCKS} (the last blocks trained, e.g. last-2)"
    )


class CheckedModel(BaseModel):
    """A settings model whose every field passes :func:`check_numbers` before its own validation."""

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``epochs: true`` is not one epoch, and 10**30 is no count."""
        return check_numbers(value, cls.model_fields[str(info.field_name)].annotation)


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def _file_name(value: str) -> str:
    """A name that becomes part of a file name under the run (features/<source>.faiss) is never a path."""
    if not _NAME.fullmatch(value):
        raise ValueError("expected a name of letters, digits, _ and - (such as learned), not a path")
    return value


FileName = Annotated[str, AfterValidator(_file_name)]
