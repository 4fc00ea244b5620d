"""Config values are what they say: a boolean is not a number, no integer is beyond what a stage can use, and
``train.finetune`` has a form a backbone can take; each refusal is one line naming the key and where it was given."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import fails

from socialfeat.config import load_config
from socialfeat.errors import UserError
from socialfeat.models.backbones import create_backbone
from socialfeat.models.heads import FeatureModel, apply_finetune

MISSING = "/nonexistent/socialfeat-config-values"


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("train.epochs=true", "train.epochs: expected an integer, not true or false"),
        ("train.lr=false", "train.lr: expected a number, not true or false"),
        ("serve.port=true", "serve.port: expected an integer, not true or false"),
        ("train.loss_weights={factors: true}", "train.loss_weights: expected a number, not true or false"),
        ("evaluate.ridge_lambdas=[1, true]", "evaluate.ridge_lambdas: expected a number, not true or false"),
        (f"train.max_pixels={10**30}", "train.max_pixels: expected an integer of at most 2,147,483,647"),
        (f"seed={10**30}", "seed: expected an integer of at most 2,147,483,647"),
        ("seed=-1", "seed: input should be greater than or equal to 0"),
        ("factorize.factors=1e400", "factorize.factors:"),
        ("train.dist_timeout_minutes=.nan", "train.dist_timeout_minutes: input should be a finite number"),
        ("train.finetune=last-999", "train.finetune: expected all, head, or last-1 to last-100"),
        ("train.finetune=last-0", "train.finetune: expected all, head, or last-1 to last-100"),
    ],
)
def test_a_value_that_is_no_setting_is_one_line(item: str, words: str) -> None:
    with pytest.raises(UserError) as exc:
        load_config(None, [item])
    assert str(exc.value).startswith(f"--set {item.split('=')[0]}=") and words in str(exc.value), str(exc.value)


def test_numbers_still_load() -> None:
    cfg = load_config(None, ["train.epochs=3", "train.lr=0.5", "seed=2147483647", "train.finetune=last-100"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.seed, cfg.train.finetune) == (3, 0.5, 2**31 - 1, "last-100")
    assert load_config(None, ["evaluate.ridge_lambdas=[1, 10.5]"]).evaluate.ridge_lambdas == [1.0, 10.5]


def test_a_boolean_number_in_a_config_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: yes\n")
    with pytest.raises(UserError) as exc:
        load_config(path)
    assert str(exc.value) == f"{path}: train.epochs: expected an integer, not true or false (got True)"


def test_the_cli_refuses_a_boolean_epoch_count(capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(["train", MISSING, "--set", "train.epochs=true"], capsys)
    assert line == "error: --set train.epochs=true: train.epochs: expected an integer, not true or false (got True)"


def test_finetune_beyond_the_backbones_blocks_names_them() -> None:
    model = FeatureModel(create_backbone("socialfeat_tiny", "random"), {"factors": 4}, 0.0)
    with pytest.raises(UserError) as exc:
        apply_finetune(model, "last-9")
    assert str(exc.value) == (
        "train.finetune: TinyNet has 3 blocks, got 'last-9'; expected all, head, or last-1 to last-3"
    )
    apply_finetune(model, "last-3")  # every block: allowed


def test_a_folder_given_as_config_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(["train", MISSING, "-c", str(tmp_path)], capsys)
    assert line == f"error: {tmp_path}: is a folder; expected a YAML config file"
    line = fails(["train", MISSING, "-c", str(tmp_path / "none.yaml")], capsys)
    assert line == f"error: {tmp_path / 'none.yaml'}: config file not found"
