"""Shared fixtures: a small simulated platform built once per session, and the real data's location."""

from __future__ import annotations

import copy
import shutil
import signal
from pathlib import Path

import pytest
from environment import need, need_module

from socialfeat.config import SimulateConfig

# A suite started in the background by a shell without job control (`pytest … &`) inherits SIGINT ignored, and so
# does every CLI child it starts: the Ctrl-C tests' signals would vanish and the stage would run to the end.
# Children get the default back from here (a handler resets to SIG_DFL at exec; SIG_IGN would survive it).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MOVIELENS = SHARED / "movielens-1m"


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated platform (same data contract as a real export), generated once."""
    from socialfeat.data.simulate import simulate

    out = tmp_path_factory.mktemp("platform") / "demo"
    simulate(out, SimulateConfig(n_users=300, n_items=400, image_size=32, views_per_user=40), seed=7)
    return out


@pytest.fixture
def movielens() -> Path:
    need((MOVIELENS / "interactions.csv").exists(), f"no MovieLens sample at {MOVIELENS} (../shared/data)")
    return MOVIELENS


@pytest.fixture(scope="session")
def demo_dataset(platform: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small simulated platform ingested once: a run folder holding dataset/."""
    from socialfeat.config import load_config
    from socialfeat.data.ingest import ingest

    run = tmp_path_factory.mktemp("run")
    cfg = load_config(
        None,
        [],
        {
            "ingest.interactions": ("t", platform / "interactions.csv"),
            "ingest.items": ("t", platform / "items.csv"),
            "ingest.comments": ("t", platform / "comments.csv"),
        },
    )
    ingest(cfg, run / "dataset")
    return run


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of a run folder (dataset only), so a test can write factors/ into it."""
    import shutil

    shutil.copytree(run / "dataset", dest / "dataset")
    return dest


def _factorized_copy(demo_dataset: Path, dest: Path) -> Path:
    """A copy of the small platform's dataset with ALS factors and 20% cold items (half valid, half test)."""
    from socialfeat.config import load_config
    from socialfeat.factorize.stage import factorize

    run = copy_run(demo_dataset, dest)
    overrides = ["factorize.factors=16", "factorize.alpha=1", "factorize.evaluate=false", "split.cold_fraction=0.2"]
    factorize(load_config(None, overrides), run)
    return run


@pytest.fixture(scope="module")
def cold_run(demo_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small simulated platform with ALS factors and 20% cold items, one per test module."""
    return _factorized_copy(demo_dataset, tmp_path_factory.mktemp("cold") / "run")


@pytest.fixture(scope="module")
def warm_run(demo_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cold_run's platform with factor targets too: ready to train (one per test module, its own folder)."""
    from socialfeat.config import load_config
    from socialfeat.targets.stage import targets

    run = _factorized_copy(demo_dataset, tmp_path_factory.mktemp("warm") / "run")
    targets(load_config(None, ["targets.clusters=6"]), run)
    return run


@pytest.fixture(scope="session")
def embedded_run(demo_dataset: Path, platform: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small platform carried through factorize → targets → train (tiny net, CPU) → embed learned/imagenet/
    random: what index, similar, recommend, evaluate and report read. Tests copy it before writing into it."""
    import shutil

    from socialfeat.config import load_config
    from socialfeat.embed import embed
    from socialfeat.factorize.stage import factorize
    from socialfeat.targets.stage import targets
    from socialfeat.train import train

    run = tmp_path_factory.mktemp("embedded") / "run"
    shutil.copytree(demo_dataset / "dataset", run / "dataset")
    cfg = load_config(
        None,
        [
            "factorize.factors=16",
            "factorize.alpha=1",
            "factorize.evaluate=false",
            "split.cold_fraction=0.2",
            "targets.clusters=6",
            "train.backbone=socialfeat_tiny",
            "train.weights=random",
            "train.image_size=32",
            "train.epochs=4",
            "train.batch_size=32",
            "train.lr=0.005",
            "train.finetune=all",
            "train.threads=1",
            "train.targets=[factors,factor-clusters]",
            f"evaluate.labels={platform / 'labels.csv'}",
        ],
    )
    factorize(cfg, run)
    targets(cfg, run)
    train(cfg, run)
    for source in ("learned", "imagenet", "random"):
        embed(cfg, run, source)
    return run


# ---------------------------------------------------------------- the web explorer (tests/serve)


@pytest.fixture(scope="session")
def served_run(embedded_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("served") / "run"
    shutil.copytree(embedded_run, run)
    return run


@pytest.fixture(scope="session")
def explorer(served_run: Path):  # noqa: ANN201
    need_module("fastapi", "the serve extra is not installed")
    from socialfeat.config import load_config
    from socialfeat.serve.explorer import Explorer

    return Explorer(load_config(None, []), served_run)


@pytest.fixture(scope="session")
def limited_client(explorer):  # noqa: ANN001, ANN201
    """A TestClient of the same loaded explorer under other serve limits (no second model load)."""
    from fastapi.testclient import TestClient

    from socialfeat.serve.app import create_app

    def make(**serve):  # noqa: ANN003, ANN202
        other = copy.copy(explorer)
        other.config = explorer.config.model_copy(update={"serve": explorer.config.serve.model_copy(update=serve)})
        return TestClient(create_app(other))

    return make


@pytest.fixture(scope="session")
def client(explorer):  # noqa: ANN001, ANN201
    from fastapi.testclient import TestClient

    from socialfeat.serve.app import create_app

    with TestClient(create_app(explorer)) as c:
        yield c


@pytest.fixture(scope="session")
def content_run(embedded_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the embedded run with a fitted content model over the learned features, text and tags (the upload
    form's title, text and tags fields; imagenet left out: its joint fits would triple the time); skipped without
    the text extra."""
    need_module("sentence_transformers", "the text extra is not installed")
    from socialfeat.config import load_config
    from socialfeat.content import content

    run = tmp_path_factory.mktemp("content-served") / "run"
    shutil.copytree(embedded_run, run, ignore=shutil.ignore_patterns("export"))
    sources = ["content.sources=[learned,text,tags]", "content.fusion_step=0.25", "content.lightfm=false"]
    content(load_config(None, sources), run)
    return run


@pytest.fixture(scope="session")
def content_explorer(content_run: Path):  # noqa: ANN201
    need_module("fastapi", "the serve extra is not installed")
    from socialfeat.config import load_config
    from socialfeat.serve.explorer import Explorer

    return Explorer(load_config(None, []), content_run)


@pytest.fixture(scope="session")
def content_client(content_explorer):  # noqa: ANN001, ANN201
    from fastapi.testclient import TestClient

    from socialfeat.serve.app import create_app

    with TestClient(create_app(content_explorer)) as c:
        yield c
