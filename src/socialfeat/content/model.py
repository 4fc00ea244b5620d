"""A fitted content model read back from ``RUN/content/``: predicted item factors for a new item from whichever of
its sources are given (what ``recommend --title/--tags``, ``recommend --user`` and the explorer's upload use)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from socialfeat.artifacts import damaged, read_json, read_safetensors
from socialfeat.content.joint import JointMap
from socialfeat.content.sources import IMAGE_SOURCES, item_text, numeric_rows, year_from_title
from socialfeat.data.tags import multi_hot
from socialfeat.errors import UserError
from socialfeat.measures.coldstart import RidgeMap


class ContentModel:
    """The fitted content model of a run: predicted item factors for a new item from whichever of its sources are
    given (an image's features, a title and text, tags, numeric values)."""

    def __init__(self, run: str | os.PathLike[str]) -> None:
        folder = Path(run) / "content"
        if not (folder / "model.json").is_file():
            raise UserError(str(run), f"no content model; run `socialfeat content {run}` first")
        self.meta = read_json(folder / "model.json")
        tensors = read_safetensors(folder / "model.safetensors", framework="numpy")
        try:
            self._build(tensors)
        except (KeyError, TypeError, AttributeError, ValueError) as e:  # two files that do not belong together
            what = f"does not fit model.json ({type(e).__name__}: {e})"
            raise damaged(folder / "model.safetensors", what) from None

    def _build(self, tensors: dict[str, np.ndarray]) -> None:
        self.maps = {
            name: RidgeMap(*(tensors[f"{name}.{p}"] for p in ("mean_x", "std_x", "weight", "mean_v")))
            for name in self.meta["blocks"]
        }
        self.weights = {b: float(w) for b, w in self.meta["weights"].items() if w > 0}
        self.joint: JointMap | None = None
        if self.meta.get("kind") == "joint":
            j = self.meta["joint"]
            part = {p: {b: tensors[f"joint.{b}.{p}"] for b in j["sources"]} for p in ("mean_x", "std_x", "weight")}
            self.joint = JointMap(j["sources"], part["mean_x"], part["std_x"], part["weight"],
                                  tensors["joint.mean_v"], j["lambdas"], j["dropout"])  # fmt: skip
            for missing in j.get("fallbacks", []):
                rest = [b for b in j["sources"] if b != missing]
                self.joint.fallbacks[missing] = JointMap(
                    rest,
                    {b: part["mean_x"][b] for b in rest},
                    {b: part["std_x"][b] for b in rest},
                    {b: tensors[f"joint-without-{missing}.{b}.weight"] for b in rest},
                    tensors["joint.mean_v"],
                    {b: j["lambdas"][b] for b in rest},
                    j["dropout"],
                )

    @property
    def image_source(self) -> str | None:
        return next((b for b in self.weights if b in IMAGE_SOURCES), None)

    @property
    def kind(self) -> str:
        """``fusion`` (per-source ridge maps, late fusion) or ``joint`` (one ridge over every source)."""
        return str(self.meta.get("kind", "fusion"))

    @property
    def fields(self) -> list[str]:
        """The fields of a new item this model reads: a title feeds the text source (and the numeric one, when
        the year is parsed from titles), a description the text source, tags the tags source."""
        fit = self.meta["blocks"]
        title = "text" in fit or ("numeric" in fit and bool(self.meta.get("year_from_title")))
        return [f for f, ok in (("title", title), ("text", "text" in fit), ("tags", "tags" in fit)) if ok]

    def shares(self, sources: list[str]) -> dict[str, float] | None:
        """Each source's weight in a late-fusion model, renormalised over ``sources``; None for a joint model,
        whose sources are fit together and do not add up separately."""
        if self.kind != "fusion":
            return None
        total = sum(self.weights[b] for b in sources)
        return {b: self.weights[b] / total for b in sources} if total > 0 else None

    def check(self, title: str | None = None, text: str | None = None, tags: list[str] | None = None) -> list[str]:
        """Refuse, before any image is decoded or text embedded, a field this model cannot read (a :class:`UserError`
        naming it: silently ignoring what a user typed would score a different item than they meant); notes on
        fields read but given no weight by the fusion."""
        if title is not None and not title.strip():
            raise UserError("title", "empty title; give the item's title or leave it out")
        fields = self.fields
        for name, given in (("title", title), ("text", text and text.strip()), ("tags", tags)):
            if given is not None and given != "" and name not in fields:
                source = "tags" if name == "tags" else "text"
                raise UserError(
                    name, f"this run's content model has no {source} source (it was fit on {self.described})"
                )
        notes = []
        for name, given in (("text", title or text), ("tags", tags)):
            if given and name in self.meta["blocks"] and name not in self.weights:
                notes.append(
                    f"{name}: fit, but the fusion chosen on valid gives it no weight; it does not change the score"
                )
        return notes

    @property
    def described(self) -> str:
        """The sources the model was fit on, as a user reads them in a message."""
        return ", ".join(self.meta["blocks"]) or "no source"

    @property
    def vocabulary(self) -> list[str] | None:
        return self.meta["blocks"].get("tags", {}).get("vocabulary")

    def blocks_for(
        self,
        image_features: np.ndarray | None = None,
        title: str | None = None,
        text: str | None = None,
        tags: list[str] | None = None,
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        """The feature vector of each source this item has, and notes on what was left out. A field the model
        has no source for (text on a run fit without text, tags without a vocabulary) is a :class:`UserError`
        naming it: silently ignoring what a user typed would score a different item than they meant."""
        notes = self.check(title, text, tags)
        out: dict[str, np.ndarray] = {}
        if image_features is not None and self.image_source:
            out[self.image_source] = image_features
        if "text" in self.weights and (title or text):
            from socialfeat.models.text import embed_texts

            out["text"] = embed_texts([item_text(title, text)])[0]
        if tags and "tags" in self.weights:
            vocab = self.vocabulary or []
            row, unseen = multi_hot([[t.strip().lower() for t in tags if t.strip()]], vocab)
            if unseen:
                notes.append(f"{unseen} of {len(tags)} tags are not in the run's vocabulary; ignored")
            if row.any():
                out["tags"] = row[0]
        if "numeric" in self.weights and title and self.meta.get("year_from_title"):
            stats = self.meta["blocks"]["numeric"]["columns"]
            year = year_from_title(title)
            if year is not None and set(stats) == {"year"}:
                out["numeric"] = numeric_rows({"year": [year]}, stats)[0][0]
        return out, notes

    def predict(self, blocks: dict[str, np.ndarray]) -> np.ndarray:
        """Fused predicted factors from the given blocks (weights renormalised over those present)."""
        present = {b: w for b, w in self.weights.items() if b in blocks}
        if not present:
            raise UserError("content", f"none of the model's sources ({', '.join(self.weights)}) was given")
        if self.joint is not None:
            return self.joint.predict({b: blocks[b][None] for b in present})[0]
        total = sum(present.values())
        return sum(w / total * self.maps[b].predict(blocks[b][None])[0] for b, w in present.items())
