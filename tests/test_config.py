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


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("factorize.alpha=nan", "factorize.alpha"),
        ("factorize.regularization=.inf", "factorize.regularization"),
        ("factorize.epsilon=-.inf", "factorize.epsilon"),
        ("filter.drop_top_users=.nan", "filter.drop_top_users"),
        ("train.lr=inf", "train.lr"),
        ("train.distill=.nan", "train.distill"),
        ("targets.stats_weight=.inf", "targets.stats_weight"),
        ("simulate.comment_rate=.nan", "simulate.comment_rate"),
        ("ingest.event_weights.like=.nan", "ingest.event_weights.like"),
        ("evaluate.ridge_lambdas=[1, .inf]", "evaluate.ridge_lambdas.1"),
        ("factorize.sweep={alpha: [1, .nan]}", "factorize.sweep.alpha.1"),
    ],
)
def test_non_finite_numbers_are_refused_by_key(override: str, key: str) -> None:
    with pytest.raises(UserError) as exc:
        load_config(None, [override])
    assert exc.value.where == f"--set {override}"
    assert exc.value.message.startswith(f"{key}: input should be a finite number"), exc.value.message


def test_non_finite_numbers_in_a_file_are_refused_by_key(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("factorize:\n  alpha: .nan\n")
    with pytest.raises(UserError, match=r"^.*factorize\.alpha: input should be a finite number \(got nan\)") as exc:
        load_config(f)
    assert exc.value.where == str(f)
    f.write_text("ingest:\n  event_weights: {like: .inf}\n")
    with pytest.raises(UserError, match=r"ingest\.event_weights\.like: input should be a finite number"):
        load_config(f)
    f.write_text("ingest:\n  event_weights: {like: 1.0e+39}\n")
    with pytest.raises(UserError, match=r"ingest\.event_weights\.like: 1e\+39 is beyond 3\.4e\+38"):
        load_config(f)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed: 1\nname: x\nseed: 2\n", "line 3: key 'seed' appears twice in one mapping (first on line 1)"),
        (
            "filter:\n  min_user_interactions: 1\n  max_rounds: 3\n  min_user_interactions: 2\n",
            "line 4: key 'filter.min_user_interactions' appears twice in one mapping (first on line 2)",
        ),
        (
            "ingest:\n  event_weights: {like: 1, like: 2}\n",
            "line 2: key 'ingest.event_weights.like' appears twice in one mapping (first on line 2)",
        ),
        (  # the first repeat in the file is the one named, whatever its depth
            "filter:\n  max_rounds: 1\n  max_rounds: 2\nseed: 1\nseed: 2\n",
            "line 3: key 'filter.max_rounds' appears twice",
        ),
    ],
)
def test_duplicate_yaml_keys_are_refused_with_both_lines(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as exc:
        load_config(f)
    assert exc.value.where == str(f) and exc.value.message.startswith(message), exc.value.message


def test_a_merge_key_may_be_overridden_and_set_values_refuse_duplicates(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("ingest:\n  event_weights:\n    <<: {like: 1, view: 2}\n    like: 3\n")
    assert load_config(f).ingest.event_weights["like"] == 3  # YAML's override of merged keys is not a duplicate
    with pytest.raises(UserError, match="key 'a' appears twice") as exc:
        load_config(None, ["ingest.event_weights={a: 1, a: 2}"])
    assert exc.value.where == "--set ingest.event_weights={a: 1, a: 2}"


def test_a_config_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_bytes("seed: 1\nname: caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="line 2: not UTF-8 text"):
        load_config(f)


def bomb(depth: int) -> str:
    """A billion-laughs value: ``depth`` anchors, each a list of nine aliases of the one before (9**depth values)."""
    anchors = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    anchors += [f"&a{d} [{', '.join([f'*a{d - 1}'] * 9)}]" for d in range(1, depth)]
    return f"[{', '.join(anchors)}]"


def test_an_echoed_value_is_clipped_after_the_reason() -> None:
    with pytest.raises(UserError) as exc:
        load_config(None, ["factorize.regularization=" + "x" * 3000])
    assert exc.value.where.startswith("--set factorize.regularization=xxx") and len(exc.value.where) < 80
    assert exc.value.message.startswith("factorize.regularization: input should be a valid number")
    assert len(str(exc.value)) < 300 and "x" * 60 not in exc.value.message, str(exc.value)
    with pytest.raises(UserError) as exc:
        load_config(None, ["x" * 3000 + "=1"])
    assert len(str(exc.value)) < 400 and exc.value.message.startswith("unknown key 'xxx"), str(exc.value)


@pytest.mark.parametrize("depth", [3, 5])
def test_an_alias_bomb_that_fits_is_echoed_in_short(tmp_path: Path, depth: int) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(f"ingest:\n  event_weights: {{like: {bomb(depth)}}}\n")
    with pytest.raises(UserError) as exc:
        load_config(f)
    assert exc.value.message.startswith("ingest.event_weights.like: input should be a valid number (got [[")
    assert len(str(exc.value)) < 300, len(str(exc.value))


@pytest.mark.parametrize("depth", [6, 8, 12])
def test_an_alias_bomb_is_refused_before_it_is_built(tmp_path: Path, depth: int) -> None:
    """9**12 values would take all memory if built or echoed; the composed graph is counted instead, in a blink."""
    import time
    import tracemalloc

    f = tmp_path / "c.yaml"
    f.write_text(f"ingest:\n  event_weights: {{like: {bomb(depth)}}}\n")
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(UserError) as exc:
            load_config(f)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert exc.value.where == str(f)
    assert exc.value.message.startswith("line 2: this value expands to more than 100,000 values"), exc.value.message
    assert time.perf_counter() - started < 2 and peak < 20e6, (time.perf_counter() - started, peak)
    with pytest.raises(UserError, match="expands to more than 100,000 values") as exc:
        load_config(None, [f"ingest.event_weights.like={bomb(depth)}"])
    assert len(str(exc.value)) < 300


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: &a [*a]\n", "line 1: an alias refers to the value that holds it"),
        ("ingest:\n  event_weights: &w {like: *w}\n", "line 2: an alias refers to the value that holds it"),
        ("name: " + "[" * 3000 + "]" * 3000 + "\n", "values nested too deeply"),
    ],
)
def test_recursive_and_bottomless_values_are_refused(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as exc:
        load_config(f)
    assert exc.value.where == str(f) and exc.value.message.startswith(message), exc.value.message


def test_a_mapping_where_a_value_belongs_is_blamed_on_its_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("seed: {x: 1}\n")
    with pytest.raises(UserError, match=r"seed: input should be a valid integer \(got \{'x': 1\}\)") as exc:
        load_config(f)
    assert exc.value.where == str(f)


def test_given_by_names_where_each_value_came_from(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("ingest:\n  columns: {item: iid}\n")
    c = load_config(f, ["ingest.columns.event=kind"], {"ingest.columns.user": ("--user-col", "uid")})
    assert c.given_by("ingest.columns.user", "--user-col") == "--user-col"
    assert c.given_by("ingest.columns.event", "--event-col") == "--set ingest.columns.event=kind"
    assert c.given_by("ingest.columns.item", "--item-col") == f"{f}: ingest.columns.item"
    assert load_config(None).given_by("ingest.columns.user", "--user-col") == "--user-col"
    assert c == load_config(None, ["ingest.columns.item=iid", "ingest.columns.event=kind", "ingest.columns.user=uid"])
