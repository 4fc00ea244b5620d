"""``run``'s caching of what a stage reads from the run when it is there: evaluate copies the content model's rows,
so a content model fit, refit or removed since evaluate ran makes it stale — also when this config does not run the
content stage (``socialfeat content RUN`` by hand)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from socialfeat import pipeline
from socialfeat.config import load_config


def test_evaluate_reruns_when_the_content_model_appears_changes_or_goes(tmp_path: Path) -> None:
    config = load_config(None, [])
    assert not config.content.sources  # the content stage is not part of this pipeline
    run = tmp_path / "run"
    for name in ("metrics.json", "manifest.json", "config.yaml"):
        (run / "eval").mkdir(parents=True, exist_ok=True)
        (run / "eval" / name).write_text("{}")
    recorded = pipeline.StageOutcome("evaluate", "ran")

    def reason() -> str | None:
        return pipeline.stale_reason(config, run, "evaluate", "h", ())

    def evaluated() -> None:
        pipeline._write_marker(config, run, recorded, "h")

    evaluated()
    assert reason() is None
    content = run / "content" / "metrics.json"
    content.parent.mkdir()
    content.write_text('{"rows": []}')
    old = (run / "eval" / "metrics.json").stat().st_mtime - 100
    os.utime(content, (old, old))  # even an older file: it was not there when evaluate ran
    assert reason() == "content/metrics.json added"
    evaluated()
    assert reason() is None
    content.write_text('{"rows": [1]}')
    os.utime(content, (old, old))
    assert reason() == "content/metrics.json changed since"
    evaluated()
    shutil.rmtree(run / "content")
    assert reason() == "content/metrics.json removed"


def test_a_marker_from_before_still_sees_a_newer_content_model(tmp_path: Path) -> None:
    config = load_config(None, [])
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    for name in ("metrics.json", "manifest.json", "config.yaml"):
        (run / "eval" / name).write_text("{}")
    pipeline._write_marker(config, run, pipeline.StageOutcome("evaluate", "ran"), "h")
    marker = pipeline.marker_path(run, "evaluate")
    marker.write_text(marker.read_text().replace('"inputs"', '"inputs_unknown_to_old_versions"'))
    (run / "content").mkdir()
    (run / "content" / "metrics.json").write_text("{}")
    new = (run / "eval" / "metrics.json").stat().st_mtime + 100
    os.utime(run / "content" / "metrics.json", (new, new))
    assert pipeline.stale_reason(config, run, "evaluate", "h", ()) == "content/metrics.json is newer"
