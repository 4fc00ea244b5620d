"""A served copy of the embedded run: one explorer (models and indexes loaded once) for the API and browser tests."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")


@pytest.fixture(scope="session")
def served_run(embedded_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("served") / "run"
    shutil.copytree(embedded_run, run)
    return run


@pytest.fixture(scope="session")
def explorer(served_run: Path):  # noqa: ANN201
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
