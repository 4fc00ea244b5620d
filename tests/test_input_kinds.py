"""A file where a folder belongs, a folder where a file belongs, and a weights file holding pickled objects: each
is told as what it is and what was expected, in one line, never as "not found" or with advice to unpickle."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from cli_helpers import fails

from socialfeat.artifacts import reading
from socialfeat.errors import UserError
from socialfeat.models.backbones import read_weights

MISSING = "/nonexistent/socialfeat-input-kinds"


class Payload:
    """Any object a pickle may carry: torch's safe loader refuses it (a real attack would run code instead)."""


@pytest.fixture
def pickled(tmp_path: Path) -> Path:
    path = tmp_path / "weights.pt"
    torch.save({"stem.weight": torch.zeros(2), "extra": Payload()}, path)
    return path


def test_embed_image_root_given_a_file_says_it_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table, root = tmp_path / "images.csv", tmp_path / "notes.txt"
    table.write_text("image\na.png\n")
    root.write_text("not a folder\n")
    argv = ["embed", MISSING, "--images", str(table), "--out", str(tmp_path / "o.parquet"), "--image-root", str(root)]
    line = fails(argv, capsys)
    assert line == f"error: {root}: is a file; --image-root expects the folder the table's image paths are relative to"


@pytest.mark.parametrize("command", ["recommend", "similar"])
def test_image_given_a_folder_says_it_is_a_folder(
    served_run: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    line = fails([command, str(served_run), "--image", str(folder)], capsys)
    assert line == f"error: {folder}: is a folder; --image expects an image file (JPEG, PNG, WebP, …)"


def test_pickled_weights_are_refused_without_advice_to_unpickle(pickled: Path) -> None:
    with pytest.raises(UserError) as exc:
        read_weights(pickled)
    message = str(exc.value)
    assert message.startswith(f"{pickled}: holds pickled Python objects, which socialfeat will not load")
    assert "weights_only" not in message and ".safetensors" in message and "\n" not in message


def test_a_backbone_from_a_pickled_weights_file_is_refused(pickled: Path) -> None:
    from socialfeat.models.backbones import create_backbone

    with pytest.raises(UserError) as exc:
        create_backbone("socialfeat_tiny", str(pickled))
    assert "pickled Python objects" in str(exc.value) and "weights_only" not in str(exc.value)


def test_a_pickled_checkpoint_state_is_damaged_without_advice_to_unpickle(pickled: Path) -> None:
    with pytest.raises(UserError) as exc, reading(pickled, "PyTorch checkpoint"):
        torch.load(pickled, map_location="cpu", weights_only=True)
    assert "holds pickled Python objects, which socialfeat will not load" in str(exc.value)
    assert "weights_only" not in str(exc.value)


def test_the_unpickling_error_is_what_torch_raises(pickled: Path) -> None:
    """The messages above hang on this: torch's safe loader refuses an object with UnpicklingError."""
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        torch.load(pickled, map_location="cpu", weights_only=True)
