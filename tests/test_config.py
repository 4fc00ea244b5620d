"""Config layering: defaults < file < flags < --set, and errors that name the key."""

from pathlib import Path

import pytest

from socialfeat.config import dump_config, load_config, provenance
from socialfeat.errors import UserError


def test_defaults_file_flags_and_overrides_layer(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(
        "seed: 3\nfilter:\n  min_user_interactions: 7\n  min_item_interactions: 9\ningest:\n  event_weights: {like: 2}\n"
    )
    c = load_config(f, ["filter.min_item_interactions=11"], {"ingest.columns.user": ("--user-col", "uid")})
    assert c.seed == 3 and c.filter.min_user_interactions == 7 and c.filter.min_item_interactions == 11
    assert c.ingest.columns.user == "uid"
    assert c.ingest.event_weights["like"] == 2 and c.ingest.event_weights["view"] == 1  # merged with defaults
    assert "min_user_interactions: 7" in dump_config(c)


@pytest.mark.parametrize(
    ("override", "where", "fragment"),
    [
        ("filter.min_users=3", "--set filter.min_users=3", "unknown key 'filter.min_users'"),
        ("filter.min_user_interactions=abc", "--set filter.min_user_interactions=abc", "valid integer"),
        ("filter.min_user_interactions=0", "--set filter.min_user_interactions=0", "greater than or equal to 1"),
        ("nonsense", "--set nonsense", "expected key=value"),
        ("ingest.columns.user.x=1", "--set ingest.columns.user.x=1", "is a value, not a section"),
    ],
)
def test_bad_overrides_name_the_key(override: str, where: str, fragment: str) -> None:
    with pytest.raises(UserError) as exc:
        load_config(None, [override])
    assert exc.value.where == where and fragment in exc.value.message


def test_bad_file_names_file_and_key(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("filter:\n  min_user_interaction: 3\n")
    with pytest.raises(UserError, match="unknown key 'filter.min_user_interaction'") as exc:
        load_config(f)
    assert exc.value.where == str(f)
    f.write_text("filter: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(f)
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_provenance_records_versions_seed_and_config() -> None:
    p = provenance(load_config(None, ["seed=5"]), "ingest")
    assert p["seed"] == 5 and p["stage"] == "ingest" and "duckdb" in p["versions"] and p["config"]["seed"] == 5


@pytest.mark.parametrize("name", ["demo.yaml", "movielens.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    c = load_config(Path(__file__).resolve().parents[1] / "configs" / name)
    assert c.ingest.interactions is not None and c.name in name
