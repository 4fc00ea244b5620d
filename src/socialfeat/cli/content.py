"""Command of the content stage: an item's audience from its image, text, tags and numeric columns."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from socialfeat.cli.options import Commands, ConfigOpt, SetOpt, config_flags, err, out, shown
from socialfeat.cli.tables import hybrid_differences, hybrid_table
from socialfeat.config import load_config
from socialfeat.errors import UserError

commands = Commands()


@commands()
def content(
    run: Annotated[Path, typer.Argument(help="Run folder with factors/ and features/; content/ is written here.")],
    sources: Annotated[
        str | None, typer.Option("--sources", help="Comma list of: learned, imagenet, text, tags, numeric.")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Fit the content model (a ridge map per source with late fusion, and a joint ridge over all of them; valid
    picks) and score every source alone, in pairs and together on the cold test items."""
    from socialfeat.content import content as run_content
    from socialfeat.content.stage import EMPTY_SOURCES
    from socialfeat.evaluate.hybrid import content_section

    picked = [s.strip() for s in sources.split(",") if s.strip()] if sources is not None else None
    cfg = load_config(config, set_ or [], config_flags(content__sources=("--sources", picked)))
    given = cfg.given_by("content.sources", "")
    if not cfg.content.sources and given.startswith("-"):  # an empty list on the command line is a mistake
        raise UserError(given, f"{EMPTY_SOURCES}, or leave it out for the default learned, text, tags")
    if not cfg.content.sources:
        if given:  # a config file's [] is the pipeline's "stage off" (every run's config.yaml says it): say so
            err.print(f"note: {given} is empty (the pipeline's 'off'); fitting learned, text, tags", markup=False)
        cfg = cfg.model_copy(
            update={"content": cfg.content.model_copy(update={"sources": ["learned", "text", "tags"]})}
        )
    with err.status("content model"):
        result = run_content(cfg, run)
    section, notes = content_section(run, result.metrics["split"], cfg.evaluate.k)  # the table evaluate prints
    if section is not None:
        out.print(hybrid_table(section))
        for line in hybrid_differences(section):
            out.print(shown(line), highlight=False, soft_wrap=True)
    for note in [*notes, *result.metrics["notes"]]:
        out.print(f"note: {shown(note)}", highlight=False, soft_wrap=True)
    model = result.metrics["model"]
    if model["kind"] == "joint":
        how = f"joint ridge over {', '.join(model['sources'])}, source dropout {model['dropout']:g}"
    else:
        how = "late fusion: " + ", ".join(f"{b} {w:.2f}" for b, w in model["weights"].items() if w > 0)
    out.print(f"wrote {shown(result.out)} (model: {shown(how)})", highlight=False, soft_wrap=True)
