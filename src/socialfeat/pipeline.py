"""``run`` and ``demo``: every stage in order, each skipped when what it would write is already there and current.

The caching rule, per stage (markers in ``RUN/.pipeline/<stage>.json``, written atomically after the stage
succeeded; a failed or interrupted stage never removes an earlier success's record — what it rewrote no longer
matches the record's stamps, so it is retried, and what it left alone is still current):

* its **hash** — of the config sections it reads, with each file the config names taken by its name, size and
  mtime rather than its path, chained with the hash of the stage before it (so a change upstream invalidates
  everything downstream) — equals the recorded one. Running from another folder, moving the run folder, or moving
  the whole project therefore reruns nothing;
* every **output** it recorded still exists with the same size and mtime (nobody rebuilt or deleted it);
* no **input** is newer than its oldest output: the outputs of the earlier stages of the pipeline, plus the files
  the config names for it (ingest: the interactions/items/comments files; factorize: ``split.cold_items``;
  train: a ``train.weights`` file; evaluate: ``evaluate.labels``), and what a stage reads from the run when it is
  there (evaluate: ``content/``, whose rows it includes even when this config does not run the content stage).
  Image files themselves are not checked;
* those optional inputs are as the stage saw them (a content model fit, refit or removed since reruns evaluate).

A stage that fails one of these reruns, and so does every stage after it. The stamps, what each stage writes and
the input rule live in :mod:`socialfeat.freshness`, which also guards a stage called by hand: it refuses to read a
product older than what that was made from, and names the stage to rerun. ``from_stage`` reruns that stage and
everything after it (the earlier ones still follow the rule); ``force`` reruns all.

``run`` never simulates: it starts from the logs the config names. ``demo`` adds a ``simulate`` stage in front
that writes ``RUN/platform`` and points ``ingest`` and ``evaluate.labels`` there; ``ingest`` sees a regenerated
platform through the input rule (its files are then newer), so the hashes of ``run`` and ``demo`` agree and
``socialfeat run RUN/config.yaml --run RUN`` continues a demo run. ``demo`` also draws a labelled collection of new
images into ``RUN/heldout``; ``transfer`` (after ``evaluate``) runs only when ``transfer.sets`` lists labelled sets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

from socialfeat.atomic import claim_dir, mark, write_json, write_text
from socialfeat.config import Config, dump_config, load_config, with_paths
from socialfeat.errors import UserError
from socialfeat.freshness import embed_sources, fingerprint, newer_input, product_paths, stage_products
from socialfeat.runlock import take, writes_run

log = logging.getLogger(__name__)

STAGES = (
    "simulate", "ingest", "factorize", "targets", "train", "embed", "index", "content", "evaluate", "transfer", "report"
)  # fmt: skip
OPTIONAL = ("content", "transfer")  # run only when configured (content.sources, transfer.sets)
RUN_STAGES = tuple(s for s in STAGES[1:] if s not in OPTIONAL)  # `run` never simulates; transfer joins when configured
HELDOUT = "heldout"  # the demo's labelled collection of new images (RUN/heldout), for transfer
MARKERS = ".pipeline"
FIRST_RUN = "not run yet"  # the reason of a stage with no earlier output: its line shows only the time

# The config sections (or single ``section.key`` settings) each stage reads; its hash also chains the previous
# stage's hash, so e.g. the targets section reaches train, and the seed (factorize onwards) reaches every later stage.
# content scores on evaluate's user samples with its λ grid, k and bootstrap, so those settings are content's too.
CONTENT_READS = ("evaluate.users", "evaluate.valid_users", "evaluate.ridge_lambdas", "evaluate.k", "evaluate.bootstrap")
SECTIONS: dict[str, tuple[str, ...]] = {
    "simulate": ("seed", "simulate"),
    "ingest": ("ingest", "filter"),
    "factorize": ("seed", "split", "factorize"),
    "targets": ("targets",),
    "train": ("train",),
    "embed": ("embed",),
    "index": ("index",),
    "content": ("content", *CONTENT_READS),
    "evaluate": ("evaluate",),
    "transfer": ("transfer",),
    "report": ("report",),
}

# --small: the demo at test size (seconds, not minutes): a tiny CNN with random weights on 32-px images.
SMALL = (
    "simulate.n_users=300",
    "simulate.n_items=400",
    "simulate.image_size=32",
    "simulate.views_per_user=40",
    "factorize.evaluate=false",
    "targets.targets=[factors,factor-clusters]",
    "targets.clusters=6",
    "train.targets=[factors,factor-clusters]",
    "train.backbone=socialfeat_tiny",
    "train.weights=random",
    "train.finetune=all",
    "train.image_size=32",
    "train.epochs=2",
    "train.batch_size=32",
    "train.lr=0.005",
    "report.gallery_queries=4",
)
# keys of the packaged demo config that name files inside the run folder
DEMO_PATHS = ("ingest.interactions", "ingest.items", "ingest.comments", "evaluate.labels")

Progress = Callable[[str], None]


@dataclass
class StageOutcome:
    """What happened to one stage, as ``on_stage`` hears it and :class:`RunResult` keeps it.

    Attributes:
        stage: The stage's name, such as ``ingest`` or ``train``.
        action: ``skipped``, ``start``, ``ran``, ``would run`` or ``failed``.
        reason: Why it ran: ``--force``, ``after ingest``, a changed setting; ``up to date`` when skipped.
        seconds: How long it ran; 0 for a stage that did not run.
        steps: Seconds per part of a stage with parts, such as embed's per feature source.
    """

    stage: str
    action: str
    reason: str = ""
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)


@dataclass
class RunResult:
    """What a whole run did: :func:`run` and :func:`demo` return it once the last stage is done.

    Attributes:
        run: The run folder.
        stages: One outcome per stage, in order; skipped stages included.
        seconds: Wall time of the whole run.
        report: The run's ``report.html``, or None when no report was written.
    """

    run: Path
    stages: list[StageOutcome]
    seconds: float
    report: Path | None


def stage_line(o: StageOutcome) -> str:
    """What happened to a stage, in one line: ``▶ simulate   9.6 s`` on a first run (no reason: there was nothing
    before), ``▶ train      12.1 s (train.epochs: 3 → 2)`` on a rerun, ``✓ ingest     up to date``; embed adds
    ``[learned 9.1 s · imagenet 20.3 s · random 4.2 s]``."""
    name = f"{o.stage:<{max(map(len, STAGES))}}"
    if o.action == "skipped":
        return f"✓ {name}  up to date"
    if o.action == "would run":
        return f"▶ {name}  would run ({o.reason})"
    if o.action == "failed":
        return f"✗ {name}  failed after {o.seconds:.1f} s"
    reason = f" ({o.reason})" if o.reason and o.reason != FIRST_RUN else ""
    steps = " · ".join(f"{k} {v:.1f} s" for k, v in o.steps.items())
    return f"▶ {name}  {o.seconds:.1f} s{reason}{f' [{steps}]' if steps else ''}"


def default_run_dir(config: Config) -> Path:
    return Path("runs") / config.name


# ---------------------------------------------------------------------------------------------------- caching
def _identity(path: str) -> str:
    """A file the config names, as the hash sees it: its name, size and mtime, not where it lies. Running from
    another folder, moving the run folder, or moving the whole project then changes nothing; a different file
    (or the same one rewritten) does."""
    try:
        st = os.stat(path)
    except OSError:
        return f"{os.path.basename(path)} (missing)"
    return f"{os.path.basename(path)} ({st.st_size} bytes, mtime {st.st_mtime_ns})"


def live_version(run: Path) -> int:
    """The version of the run's live store (0 without one): ingest absorbs the store, so it is one of its inputs."""
    from socialfeat.live.store import LiveStore, store_path

    if not store_path(run).is_file():
        return 0
    with LiveStore(run) as store:
        return store.version()


def stage_config(
    config: Config, stage: str, run: Path | None = None, identity: bool = False, live: int | None = None
) -> dict[str, Any]:
    """The settings a stage reads. With ``run``, the files the config names are shown relative to the run folder
    (what a changed-settings reason prints); with ``identity``, as :func:`_identity` (what the hash covers).
    ingest's include the version of the run's live store (``live``, default the current one) once it has one: a
    store that grew reruns ingest and what follows, and one that did not changes nothing."""
    if run is None:
        dumped = config.model_dump(mode="json")
    elif identity:
        dumped = with_paths(config, _identity)
    else:
        base = os.path.abspath(run)
        dumped = with_paths(config, lambda p: os.path.relpath(os.path.abspath(p), base))
    out = {}
    for key in SECTIONS[stage]:
        section, _, name = key.partition(".")
        out[key] = dumped[section][name] if name else dumped[section]
    if stage == "ingest" and run is not None:
        version = live if live is not None else live_version(run)
        if version:
            out["live"] = f"store version {version}"
    return out


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_hash(config: Config, stage: str, run: Path | None, upstream: str, live: int | None = None) -> str:
    """The hash of a stage's sections (files by identity, read when the stage is reached: simulate writes the
    demo's inputs) chained with the previous stage's hash ``upstream``; simulate stands alone."""
    own = stage_config(config, stage, run, identity=run is not None, live=live)
    return _digest(own) if stage == "simulate" else _digest([own, upstream])


def stage_hashes(config: Config, stages: tuple[str, ...], run: Path | None = None) -> dict[str, str]:
    """Per stage, :func:`stage_hash` of the files as they are now."""
    hashes: dict[str, str] = {}
    upstream = ""
    for stage in stages:
        hashes[stage] = stage_hash(config, stage, run, upstream)
        upstream = upstream if stage == "simulate" else hashes[stage]
    return hashes


def stage_outputs(config: Config, run: Path, stage: str) -> list[Path]:
    """Files and folders a stage writes (folders count with every file inside): its products (see
    :mod:`socialfeat.freshness`), or for the other stages the files they write."""
    from socialfeat.index import index_path, sidecar_path

    products = stage_products(config, stage)
    if products:
        return [path for product in products for path in product_paths(run, product)]
    if stage == "simulate":
        platform = [run / "platform" / f for f in ("interactions.csv", "items.csv", "comments.csv", "labels.csv")]
        return [*platform, run / HELDOUT / "labels.csv"]
    if stage == "index":
        path = index_path(run, config.index.source, config.index.column)
        return [path, sidecar_path(path)]
    if stage == "report":
        return [run / "report.html"]
    if stage == "transfer":
        from socialfeat.evaluate.transfer_stage import transfer_path

        return [transfer_path(run, s.name) for s in config.transfer.sets]
    raise ValueError(f"unknown stage {stage!r}")


def external_inputs(config: Config, stage: str) -> list[Path]:
    """Files outside the run that the config names for a stage."""
    paths: list[Path | None] = []
    if stage == "ingest":
        paths = [config.ingest.interactions, config.ingest.items, config.ingest.comments]
    elif stage == "factorize":
        paths = [config.split.cold_items]
    elif stage == "train" and config.train.weights not in ("imagenet", "random"):
        paths = [Path(config.train.weights)]
    elif stage == "evaluate":
        paths = [config.evaluate.labels]
    elif stage == "transfer":
        paths = [s.labels for s in config.transfer.sets]
    return [Path(p) for p in paths if p is not None]


def optional_inputs(run: Path, stage: str) -> list[Path]:
    """What a stage reads from the run when it is there, whichever stages this config runs: evaluate includes the
    content model's rows (``content/``), so a model fit by ``socialfeat content RUN`` outside the pipeline counts."""
    return [run / "content"] if stage == "evaluate" else []


def marker_path(run: Path, stage: str) -> Path:
    return run / MARKERS / f"{stage}.json"


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = [*old, *(k for k in new if k not in old)]
        return [c for k in keys for c in _changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} → {new!r}"]


def stale_reason(config: Config, run: Path, stage: str, digest: str, earlier: tuple[str, ...]) -> str | None:
    """Why ``stage`` must run again, or None when its recorded outputs are current (see the module docstring)."""
    try:
        marker = json.loads(marker_path(run, stage).read_text())
    except FileNotFoundError:
        return FIRST_RUN if not any(p.exists() for p in stage_outputs(config, run, stage)) else "no record"
    except (OSError, ValueError):
        return "unreadable record"
    hashed = None  # the settings read the same, yet the hash differs: an input file or an earlier stage changed
    if marker.get("hash") != digest:
        changed = _changed_keys(marker.get("config", {}), stage_config(config, stage, run))
        if changed:
            return f"{'; '.join(changed[:3])}{' …' if len(changed) > 3 else ''}"
        files = _changed_keys(marker.get("files", {}), stage_config(config, stage, run, identity=True))
        hashed = f"input file changed since ({files[0].split(':')[0]})" if files else "upstream config changed"
    recorded: dict[str, list[int]] = marker.get("outputs", {})
    now = fingerprint(run, stage_outputs(config, run, stage))
    if not recorded:
        return "no outputs recorded"
    for rel, stamp in recorded.items():
        if rel not in now:
            return f"{rel} missing"
        if now[rel] != stamp:
            return f"{rel} changed since"
    seen: dict[str, list[int]] | None = marker.get("inputs")
    if seen is not None:  # markers written before optional inputs were recorded skip this check
        found = fingerprint(run, optional_inputs(run, stage))
        for rel in seen:
            if rel not in found:
                return f"{rel} removed"
        for rel, stamp in found.items():
            if seen.get(rel) != stamp:
                return f"{rel} {'changed since' if rel in seen else 'added'}"
    inputs = [p for s in earlier if s != "simulate" for p in stage_outputs(config, run, s)]
    inputs += optional_inputs(run, stage)
    for path in external_inputs(config, stage):
        if not path.exists():
            return f"input {path} missing"
        inputs.append(path)
    newer = newer_input(now, fingerprint(run, inputs))
    return f"{newer} is newer" if newer is not None else hashed


def _write_marker(config: Config, run: Path, outcome: StageOutcome, digest: str, live: int | None = None) -> None:
    write_json(
        marker_path(run, outcome.stage),
        {
            "stage": outcome.stage,
            "hash": digest,
            "config": stage_config(config, outcome.stage, run, live=live),
            "files": stage_config(config, outcome.stage, run, identity=True, live=live),
            "outputs": fingerprint(run, stage_outputs(config, run, outcome.stage)),
            "inputs": fingerprint(run, optional_inputs(run, outcome.stage)),
            "seconds": round(outcome.seconds, 3),
            "steps": {k: round(v, 3) for k, v in outcome.steps.items()},
            "reason": outcome.reason,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def _same_text(path: Path, text: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False


# ---------------------------------------------------------------------------------------------------- stages
def _execute(stage: str, config: Config, run: Path, say: Progress, live: int | None = None) -> dict[str, float]:
    """Run one stage; sub-step seconds (embed's three sources) come back. ingest absorbs the live store up to
    version ``live``: the version its hash saw, so a write meanwhile waits for the next run."""
    if stage == "simulate":
        from socialfeat.data.simulate import simulate, simulate_collection

        simulate(run / "platform", config.simulate, config.seed, lambda what, d, n: say(f"{what} {d:,}/{n:,}"))
        say("held-out collection")
        simulate_collection(run / HELDOUT, heldout_items(config), config.simulate.image_size, config.seed)
    elif stage == "ingest":
        from socialfeat.data.ingest import ingest

        ingest(config, run / "dataset", step=say, live_version=live)
    elif stage == "factorize":
        from socialfeat.factorize.stage import factorize

        factorize(config, run, progress=lambda label, d, n, _loss: say(f"{label} {d}/{n}"))
    elif stage == "targets":
        from socialfeat.targets.stage import targets

        targets(config, run)
    elif stage == "train":
        from socialfeat.train import train

        total = {"steps": 0}

        def note(e: dict[str, Any]) -> None:
            if e["event"] == "cache":
                say(f"caching images {e['done']:,}/{e['total']:,}")
            elif e["event"] == "start":
                total["steps"] = e["total"]
            elif e["event"] == "step":
                say(f"epoch {e['epoch'] + 1}, step {e['step']}/{total['steps']}, loss {e['loss']:.4f}")

        train(config, run, progress=note)
        if config.train.meta_class:
            from socialfeat.train import train_meta_class

            say("meta-class baseline")
            train_meta_class(config, run, progress=note)
    elif stage == "embed":
        from socialfeat.embed import embed

        steps = {}
        for source in embed_sources(config):
            t0 = time.perf_counter()
            embed(config, run, source, progress=lambda d, n, rate, s=source: say(f"{s} {d:,}/{n:,} ({rate:.0f} img/s)"))
            steps[source] = time.perf_counter() - t0
        return steps
    elif stage == "index":
        from socialfeat.index import build_index

        build_index(config, run)
    elif stage == "content":
        from socialfeat.content import content

        content(config, run, step=say)
    elif stage == "evaluate":
        from socialfeat.evaluate.stage import evaluate

        evaluate(config, run, step=say)
    elif stage == "transfer":
        from socialfeat.evaluate.transfer_stage import transfer

        transfer(config, run, progress=say)
    elif stage == "report":
        from socialfeat.report import report

        report(config, run)
    return {}


def heldout_items(config: Config) -> int:
    """Size of the demo's held-out collection: an eighth of the platform, 150 to 360 images (a probe needs a few
    dozen per class; more only slows the demo, whose probes cost about n² each)."""
    return max(150, min(360, config.simulate.n_items // 8))


def pipeline_stages(config: Config, simulate: bool) -> tuple[str, ...]:
    """The stages of this run, in order: ``demo`` simulates first; transfer only with labelled sets configured."""
    wanted = {"content": bool(config.content.sources), "transfer": bool(config.transfer.sets)}
    return tuple(s for s in STAGES if (simulate or s != "simulate") and wanted.get(s, True))


@writes_run(lambda _a: None)  # takes the lock once it has made the run folder
def run(
    config: Config,
    run_dir: str | os.PathLike[str] | None = None,
    from_stage: str | None = None,
    force: bool = False,
    *,
    simulate: bool = False,
    dry_run: bool = False,
    on_stage: Callable[[StageOutcome], None] | None = None,
    progress: Callable[[str, str], None] | None = None,
) -> RunResult:
    """Run the stages in order into ``run_dir``, skipping each one whose outputs are current.

    A failed stage leaves the outputs of earlier stages, and its own previous ones, as they were. The next call
    starts again from the stage that failed.

    Args:
        config: The run's configuration; ``config.ingest`` names the logs to start from.
        run_dir: The run folder; default ``runs/<config.name>``.
        from_stage: Rerun this stage and every later one, even when current.
        force: Rerun every stage.
        simulate: Add the ``simulate`` stage in front, as :func:`demo` does.
        dry_run: Only say what would run; nothing is written.
        on_stage: Hears each stage start and end (``stage_line`` prints one).
        progress: Hears ``(stage, message)`` while a stage works, for a progress display.

    Returns:
        Each stage's outcome, the total time and the report's path.

    Raises:
        UserError: An unknown ``from_stage``, no interaction log, a ``run_dir`` holding something else, or a
            stage's own error (told to ``on_stage`` first).
    """
    started = time.perf_counter()
    run_path = Path(run_dir) if run_dir is not None else default_run_dir(config)
    stages = pipeline_stages(config, simulate)
    if from_stage is not None and from_stage not in stages:
        raise UserError("--from", f"expected one of {', '.join(stages)}, got '{from_stage}'")
    if not simulate and config.ingest.interactions is None:
        raise UserError(
            "ingest.interactions",
            "not set: `run` starts from an interaction log named in the config (or try `socialfeat demo`)",
        )
    claim_dir(run_path, "run", flag="--out" if simulate else "--run")  # a run folder, a new one or an empty one
    if not dry_run:  # one writer per run: a second `run` (or a stage by hand) waits its turn, told by whom
        run_path.mkdir(parents=True, exist_ok=True)
        take(run_path)
    tell = on_stage or (lambda _o: None)
    upstream = ""  # the hash chain, each link computed when its stage is reached
    resolved = dump_config(config, run_path)  # paths relative to the run folder: it works from any folder
    if not dry_run and not _same_text(run_path / "config.yaml", resolved):  # an unchanged run stays untouched
        write_text(run_path / "config.yaml", resolved)
    if not dry_run:
        mark(run_path, "run")
    outcomes: list[StageOutcome] = []
    rerun_from: str | None = None  # the first stage that ran: every later one runs too
    for i, stage in enumerate(stages):
        live = live_version(run_path) if stage == "ingest" else None  # read once: the hash and ingest agree on it
        digest = stage_hash(config, stage, run_path, upstream, live)
        upstream = upstream if stage == "simulate" else digest
        if force:
            reason: str | None = "--force"
        elif rerun_from is not None:
            reason = FIRST_RUN if not marker_path(run_path, stage).exists() else f"after {rerun_from}"
        elif from_stage is not None and i >= stages.index(from_stage):
            reason = f"--from {from_stage}"
        else:
            reason = stale_reason(config, run_path, stage, digest, stages[:i])
        if reason is None:
            outcomes.append(StageOutcome(stage, "skipped", "up to date"))
            tell(outcomes[-1])
            continue
        rerun_from = rerun_from or stage
        if dry_run:
            outcomes.append(StageOutcome(stage, "would run", reason))
            tell(outcomes[-1])
            continue
        # the stage's earlier record stays: a failure that wrote nothing leaves it true (its outputs are as they
        # were), and one that rewrote an output is caught by the record's stamps ("changed since")
        tell(StageOutcome(stage, "start", reason))
        t0 = time.perf_counter()
        say = (lambda msg, s=stage: progress(s, msg)) if progress else (lambda _msg: None)
        try:
            steps = _execute(stage, config, run_path, say, live)
        except BaseException:
            tell(StageOutcome(stage, "failed", reason, time.perf_counter() - t0))
            raise
        outcome = StageOutcome(stage, "ran", reason, time.perf_counter() - t0, steps)
        _write_marker(config, run_path, outcome, digest, live)
        outcomes.append(outcome)
        tell(outcome)
    report_path = run_path / "report.html"
    return RunResult(run_path, outcomes, time.perf_counter() - started, report_path if report_path.is_file() else None)


# ---------------------------------------------------------------------------------------------------- demo
@contextmanager
def packaged_demo_config() -> Iterator[Path]:
    """The demo config shipped inside the package (paths relative to the run folder)."""
    with as_file(files("socialfeat") / "configs" / "demo.yaml") as path:
        yield path


def demo_config(
    out: str | os.PathLike[str], small: bool = False, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """The packaged demo config with its platform paths inside ``out``, so a demo run is self-contained.

    Args:
        out: The demo's run folder; the platform goes to ``out/platform``.
        small: Shrink to test size: a tiny model on small images, seconds instead of minutes.
        overrides: ``key=value`` items, as ``--set`` gives them; they come last and win.

    Returns:
        The resolved configuration.

    Raises:
        UserError: An override with an unknown key or a bad value.
    """
    out = Path(out)
    with packaged_demo_config() as path:
        base = load_config(path).model_dump()
        flags: dict[str, tuple[str, Any]] = {}
        for key in DEMO_PATHS:
            section, name = key.split(".")
            value = base[section][name]
            if value is not None:
                flags[key] = ("demo", value if Path(value).is_absolute() else out / value)
        sets = [
            {**s, **{k: s[k] if Path(s[k]).is_absolute() else str(out / s[k]) for k in ("labels", "image_root")}}
            for s in base["transfer"]["sets"]
        ]
        if sets:
            flags["transfer.sets"] = ("demo", sets)
        return load_config(path, [*(SMALL if small else ()), *overrides], flags)


def demo(
    out: str | os.PathLike[str],
    small: bool = False,
    overrides: list[str] | tuple[str, ...] = (),
    force: bool = False,
    on_stage: Callable[[StageOutcome], None] | None = None,
    progress: Callable[[str, str], None] | None = None,
) -> RunResult:
    """Simulate the demo platform into ``out/platform`` and run the whole pipeline on it.

    Args:
        out: The run folder: new, empty, or an earlier demo run.
        small: Shrink to test size, as :func:`demo_config` does.
        overrides: ``key=value`` items, as ``--set`` gives them.
        force: Rerun every stage.
        on_stage: Hears each stage start and end, as in :func:`run`.
        progress: Hears ``(stage, message)`` while a stage works.

    Returns:
        Each stage's outcome, the total time and the report's path.

    Raises:
        UserError: A bad override, an ``out`` that holds something else, or a stage's own error.
    """
    config = demo_config(out, small, overrides)
    return run(config, out, force=force, simulate=True, on_stage=on_stage, progress=progress)


def headline(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Per row of ``eval/metrics.json``: cold-start AUC, retrieval lift, and the mean probe accuracy over the
    simulator's taste attributes (palette, texture, composition: what users' likes follow) — None where absent."""
    from socialfeat.data.simulate import TASTE_WEIGHT

    rows = []
    for row in metrics.get("rows", []):
        probes = row.get("probes", {})
        taste = [probes[a]["all"] for a in TASTE_WEIGHT if probes.get(a, {}).get("all") is not None]
        rows.append(
            {
                "name": row["name"],
                "auc": row.get("coldstart", {}).get("auc"),
                "lift": row.get("retrieval", {}).get("lift"),
                "taste_probe": sum(taste) / len(taste) if taste else None,
            }
        )
    return rows
