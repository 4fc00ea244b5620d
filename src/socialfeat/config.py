"""Configuration: pydantic models per stage, merged as defaults < YAML file < ``--set key=value``.

Unknown keys and wrong types are :class:`UserError` s that name the key and where it came from.
"""

from __future__ import annotations

import functools
import os
import platform
import reprlib
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from socialfeat.config_checks import MAX_INT, CheckedModel, FileName, check_finetune
from socialfeat.config_paths import RELATIVE_HEADER, absolute, map_paths, relative_to, resolved_from
from socialfeat.errors import UserError, interrupts_held

Format = Literal["csv", "tsv", "parquet", "jsonl"]


class StrictModel(CheckedModel):
    """Rejects unknown keys, so a typo in a config never passes silently, and NaN or infinite numbers (``.nan``,
    ``--set x=inf``), which no weight, threshold or rate means and which would otherwise surface deep in a stage."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class InteractionColumns(StrictModel):
    """Column names in the interactions file. ``None`` = the contract's name, if the file has it."""

    user: str = "user_id"
    item: str = "item_id"
    event: str | None = None
    value: str | None = None
    time: str | None = None


class ItemColumns(StrictModel):
    """Column names in the items file. ``id=None`` = the interactions' item column."""

    id: str | None = None
    image: str = "image"
    title: str | None = None
    tags: str | None = None
    text: str | None = None


class CommentColumns(StrictModel):
    """Column names in the comments file."""

    item: str | None = None
    user: str | None = None
    text: str = "text"
    time: str | None = None


FLOAT32_MAX = 3.4028234663852886e38  # a dataset stores weights as float32


def _fits_float32(weight: float) -> float:
    if abs(weight) > FLOAT32_MAX:
        raise ValueError(f"{weight:g} is beyond {FLOAT32_MAX:.3g}, the largest weight a dataset holds (float32)")
    return weight


EventWeight = Annotated[float, AfterValidator(_fits_float32)]
DEFAULT_EVENT_WEIGHTS = {"view": 1.0, "like": 4.0, "appreciate": 4.0, "comment": 6.0, "share": 8.0}


class IngestConfig(StrictModel):
    """Where the raw logs are and how to read them."""

    interactions: Path | None = None
    items: Path | None = None
    comments: Path | None = None
    image_root: Path | None = None
    format: Format | None = Field(None, description="input format; default: from each file's extension")
    columns: InteractionColumns = InteractionColumns()
    item_columns: ItemColumns = ItemColumns()
    comment_columns: CommentColumns = CommentColumns()
    default_event: str = Field("interaction", description="event kind of rows when there is no event column")
    event_weights: dict[str, EventWeight] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
        description="weight of one event of each kind in a pair's combined weight; unlisted kinds weigh 1",
    )
    strict: bool = Field(False, description="a missing image is an error instead of a dropped item")
    allow_absolute_images: bool = Field(
        False,
        description="accept absolute image paths outside the image root in item and image tables; by default every "
        "path must stay under its root (one that leaves it, by .., a symlink or an absolute path elsewhere, is refused "
        "like a missing image)",
    )
    memory_limit: str = Field(
        "auto",
        description="DuckDB memory limit, like 4GB; auto = a quarter of the machine's memory, at least 1GB. Larger "
        "logs spill to disk, but the aggregation's joins need room: 423K items × 309K users with text ids took 4GB",
    )
    threads: int | None = Field(None, ge=1, description="DuckDB threads; default: all cores")


class FilterConfig(StrictModel):
    """Popularity filtering as in collaborative feature learning: drop the least and the most popular.

    Counts are distinct user–item pairs. The most popular are dropped once, from the counts before
    filtering; the minimum thresholds are then applied repeatedly until nothing changes.
    """

    min_user_interactions: int = Field(5, ge=1)
    min_item_interactions: int = Field(5, ge=1)
    drop_top_users: float = Field(0.001, ge=0.0, lt=1.0, description="fraction of the most active users dropped")
    drop_top_items: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of the most popular items dropped")
    max_user_interactions: int | None = Field(None, ge=1)
    max_item_interactions: int | None = Field(None, ge=1)
    max_rounds: int = Field(100, ge=1)


class SimulateConfig(StrictModel):
    """Size and shape of the embedded demo platform."""

    n_users: int = Field(2000, ge=10, le=10_000_000)
    n_items: int = Field(3000, ge=10, le=10_000_000)
    image_size: int = Field(96, ge=32, le=512)
    views_per_user: float = Field(60.0, gt=0, le=100_000, description="mean views per user (power-law spread)")
    comment_rate: float = Field(0.25, ge=0, le=1, description="probability that a like comes with a comment")
    share_rate: float = Field(0.08, ge=0, le=1, description="probability that a like comes with a share")


class SplitConfig(StrictModel):
    """Held-out data: cold items (never trained on, for cold-start evaluation) and per-user leave-k-out."""

    cold_items: Path | None = Field(None, description="file item_id,split with split in train/valid/test")
    cold_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="random fraction of items made cold, if no file")
    cold_valid_share: float = Field(0.25, gt=0.0, lt=1.0, description="share of random cold items put in valid")
    leave_out: int = Field(1, ge=1, le=1000, description="interactions held out per user (latest by time, else random)")
    min_train: int = Field(2, ge=1, description="a user keeps at least this many training interactions")


class FactorizeConfig(StrictModel):
    """Implicit-feedback ALS. Confidence c = 1 + α·w (linear) or 1 + α·log(1 + w/ε) (log)."""

    backend: Literal["local", "spark"] = "local"
    factors: int = Field(64, ge=1, le=1_000_000)
    regularization: float = Field(
        20.0, ge=0.0, le=1e6, description="λ on ‖x‖² and ‖y‖² (implicit's convention, unscaled)"
    )
    iterations: int = Field(15, ge=1, le=10_000)
    confidence: Literal["linear", "log"] = "linear"
    alpha: float = Field(10.0, gt=0.0, le=1e6)
    epsilon: float = Field(1.0, gt=0.0, le=1e6)
    threads: int = Field(0, ge=0, le=4096, description="0 = all cores")
    use_gpu: bool | None = Field(None, description="None = the GPU when implicit has CUDA and one is present")
    cg_steps: int = Field(3, ge=1)
    log_loss: bool = Field(False, description="compute the training loss each iteration (costs a pass)")
    evaluate: bool = Field(True, description="hold out data, fit, and measure ranking before the final fit")
    k: int = Field(20, ge=1, le=1000, description="cut-off of the ranking metrics")
    eval_users: int = Field(20000, ge=0, description="users sampled for the metrics; 0 = all")
    sweep: dict[str, list[float]] = Field(default_factory=dict, description="grid: {factors: [32, 64], alpha: [1, 10]}")
    spark_master: str = "local[*]"
    spark_conf: dict[str, str] = Field(default_factory=dict)


class TargetsConfig(StrictModel):
    """What the image model learns to predict: item factors, pseudo-classes from clustering them, and VisE-style
    engagement pseudo-classes from clustering what people say about an item and how they engage with it."""

    targets: list[Literal["factors", "factor-clusters", "engagement", "tags"]] = ["factors", "factor-clusters"]
    normalize: Literal["l2", "standardize", "none"] = Field("l2", description="how factor targets are scaled")
    clusters: int = Field(32, ge=2, le=1_000_000, description="k of the k-means on item factors (pseudo-classes)")
    kmeans_iterations: int = Field(25, ge=1)
    words: int = Field(10, ge=1, description="distinctive words listed per cluster")
    representatives: int = Field(5, ge=1, description="item ids listed per cluster (closest to its centre)")
    min_word_items: int = Field(3, ge=1, description="a word must occur with this many items to describe a cluster")
    engagement_clusters: int = Field(
        32, ge=2, le=1_000_000, description="k of the k-means on engagement (comments + counts)"
    )
    stats_weight: float = Field(0.25, ge=0, description="weight of the engagement counts against the comment text")
    max_comments_per_item: int = Field(50, ge=1, description="the first N comments by time describe an item")
    text_batch_size: int = Field(256, ge=1, description="comments per batch of the sentence-embedding model")
    max_tags: int = Field(256, ge=1, description="tags target: the most frequent tags of the warm items kept")
    min_tag_items: int = Field(5, ge=1, description="tags target: a tag must label this many warm items")


class TrainConfig(StrictModel):
    """The image model: a timm backbone and one head per target, trained on the warm items' images."""

    backbone: str = Field("tf_efficientnet_lite0", description="timm model name; socialfeat_tiny for tests")
    weights: str = Field(
        "imagenet",
        description="imagenet (the packaged EfficientNet-Lite0 weights), random, or a .safetensors/.pt file",
    )
    targets: list[Literal["factors", "factor-clusters", "engagement", "tags"]] = Field(
        default_factory=lambda: ["factors"],
        description="heads to train; each needs its file in targets/ (tags: a multi-label head on the items' tags, "
        "the meta-class target)",
    )
    loss_weights: dict[str, float] = Field(default_factory=dict, description="per target; unlisted weigh 1")
    regression_loss: Literal["cosine", "mse", "audience"] = Field(
        "cosine",
        description="cosine (direction only), mse, or audience: squared error of the scores every user would give "
        "(weights factor errors by the users' second moment; needs targets.normalize: none)",
    )
    finetune: Annotated[str, AfterValidator(check_finetune)] = Field(
        "last-2", description="all, head (frozen backbone) or last-N (the last N blocks)"
    )
    head_epochs: int = Field(0, ge=0, description="first epochs train the heads only, then fine-tune (LP-FT)")
    image_size: int = Field(224, ge=16, le=1024)
    epochs: int = Field(5, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536, description="global batch: split across DDP ranks")
    images_per_epoch: int = Field(
        0,
        ge=0,
        description="0 = every training image each epoch; N = a fresh seeded sample of N each epoch, so an epoch's "
        "cost stops growing with the catalogue (the schedule counts the sampled steps)",
    )
    lr: float = Field(1e-3, gt=0, le=10, description="peak learning rate of the heads")
    backbone_lr_scale: float = Field(0.1, ge=0, description="backbone lr = lr × this")
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(20, ge=0)
    dropout: float = Field(0.1, ge=0, lt=1, description="before the heads")
    augment: bool = Field(True, description="random crop and horizontal flip")
    valid_fraction: float = Field(0.1, ge=0, lt=1, description="warm items held out for validation each epoch")
    workers: int | None = Field(
        None,
        ge=0,
        le=256,
        description="DataLoader worker processes; default 0 on CPU (they would compete with the model), "
        "up to 8 per GPU",
    )
    checkpoint_every: int = Field(
        0, ge=0, le=10_000_000, description="also checkpoint every N steps; 0 = once per epoch"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bf16 autocast on GPU")
    channels_last: bool = Field(True, description="channels-last memory format on GPU")
    deterministic: bool = Field(False, description="deterministic kernels: bit-exact resume, slower")
    threads: int = Field(0, ge=0, description="CPU threads for torch; 0 = all cores")
    strict_images: bool = Field(False, description="a bad image is an error instead of a skipped item")
    max_pixels: int = Field(100_000_000, ge=1, description="larger images are refused (decompression bombs)")
    # selection: which epoch becomes run/model
    select: Literal["auto", "valid-auc", "last"] = Field(
        "auto",
        description="valid-auc keeps the epoch (0 = the untrained start) with the best cold-start AUC on the split's "
        "valid cold items; last keeps the last epoch; auto = valid-auc when the split has valid cold items",
    )
    select_items: int = Field(
        1000, ge=2, description="warm items (a seeded sub-sample) the selection's ridge is fit on, to stay cheap"
    )
    select_users: int = Field(
        5000,
        ge=0,
        description="users (a seeded sample) the selection ranks valid cold items for; 0 = all. With "
        "select_valid_items it keeps each selection's cost the same at any catalogue size",
    )
    select_valid_items: int = Field(
        2000, ge=0, description="valid cold items (a seeded sample) the selection scores; 0 = all"
    )
    dist_timeout_minutes: float = Field(
        60.0,
        gt=0,
        description="under torchrun: how long a rank waits for the others at a collective before the job fails "
        "(torch's own default is 10 min for NCCL, 30 for gloo)",
    )
    head_init: Literal["random", "ridge"] = Field(
        "random",
        description="ridge: the factors head starts as the selection's ridge map (λ chosen on valid) on the "
        "starting features — LP-FT's linear probe in closed form; needs select: valid-auc",
    )
    # knowledge preservation: what the starting backbone knew
    distill: float = Field(
        0.0, ge=0, description="weight of ‖f(x) − f₀(x)‖²/‖f₀(x)‖² toward the frozen starting backbone's features"
    )
    l2sp: float = Field(0.0, ge=0, description="weight of ½‖w − w₀‖² on the fine-tuned backbone weights (L2-SP)")
    batchnorm: Literal["train", "frozen"] = Field(
        "train",
        description="frozen keeps every BatchNorm's running statistics at the start's (the affine part still "
        "trains): the model then computes exactly the starting features until its weights move",
    )
    # ranking-aware training
    rank_loss: Literal["none", "kl"] = Field(
        "none",
        description="kl: per sampled user, KL from the ALS teacher's softmax over the batch's items (u·v) to the "
        "model's (u·v̂); needs the factors target",
    )
    rank_weight: float = Field(1.0, ge=0, description="weight of the ranking loss")
    rank_users: int = Field(256, ge=1, description="users sampled per step for the ranking loss")
    rank_temperature: float = Field(0.5, gt=0, description="softmax τ as a multiple of the teacher scores' spread")
    meta_class: bool = Field(
        False,
        description="also train the meta-class baseline (the seed paper's third column): the same recipe on the "
        "tags head alone, into run/meta-class/; embed, evaluate and transfer then show it beside learned",
    )


class EmbedConfig(StrictModel):
    """Feature extraction for every item (cold ones included) or any table of images."""

    batch_size: int = Field(128, ge=1, le=65_536)
    workers: int | None = Field(
        None,
        ge=0,
        le=256,
        description="DataLoader workers; default 0 on CPU (they would compete with the model), up to 8 per GPU",
    )
    runtime: Literal["auto", "onnx", "torch"] = Field(
        "auto",
        description="what runs embed's forward passes on CPU: onnx (ONNX Runtime on the run's export, made once and "
        "cached in RUN/export/), torch, or auto (onnx when the export extra is installed and the model exports, "
        "else torch). GPU and torchrun always use PyTorch",
    )
    block_stats: int = Field(
        0,
        ge=0,
        le=8,
        description="append per-channel mean and std of the last N blocks' outputs to the pooled features, for every "
        "source alike (richer features for the ridge map and the probes); 0: the pooled features only",
    )


class IndexConfig(StrictModel):
    """Nearest-neighbour index over one feature source (faiss)."""

    source: FileName = Field("learned", description="feature source: learned, imagenet or random")
    column: FileName = Field("features", description="column of features/<source>.parquet to index")
    kind: Literal["auto", "flat", "hnsw", "ivfpq"] = Field(
        "auto", description="auto: exact below exact_max items, HNSW below hnsw_max, IVF-PQ above"
    )
    exact_max: int = Field(50_000, ge=1)
    hnsw_max: int = Field(2_000_000, ge=1)
    hnsw_m: int = Field(32, ge=4)
    ivf_lists: int | None = Field(None, ge=1, description="IVF lists; default about 4·sqrt(N)")
    pq_bytes: int = Field(32, ge=1, description="IVF-PQ code size per vector in bytes")
    nprobe: int = Field(16, ge=1)
    k: int = Field(10, ge=1, le=1000, description="neighbours printed by similar / recommend")


class EvaluateConfig(StrictModel):
    """Cold-start, retrieval and probe evaluation of every feature source."""

    labels: Path | None = Field(
        None, description="CSV item_id,label… for linear probes (e.g. the simulator's labels.csv)"
    )
    k: int = Field(20, ge=1, le=1000, description="cut-off of recall@k and NDCG@k")
    ridge_lambdas: list[float] = Field([0.1, 1, 10, 100, 1_000, 10_000, 100_000], min_length=1)
    neighbours: int = Field(10, ge=1, description="neighbours per query in the behavioural retrieval test")
    few_shot: int = Field(5, ge=1, description="labelled items per class in the few-label probe")
    max_queries: int = Field(2000, ge=1, description="queries sampled for the retrieval test")
    users: int = Field(
        20000,
        ge=0,
        description="users every cold-start row is ranked on: a seeded sample of those with a positive and a "
        "negative test item; 0 = all",
    )
    valid_users: int = Field(5000, ge=0, description="users λ is chosen on (the valid cold items), seeded; 0 = all")
    bootstrap: int = Field(
        1000,
        ge=0,
        description="paired bootstrap resamples of the users and test items for 95% intervals of AUCs; 0 = off",
    )


class ReportConfig(StrictModel):
    """What the HTML report shows."""

    gallery_queries: int = Field(8, ge=1, description="query images in the nearest-neighbour gallery")
    gallery_neighbours: int = Field(6, ge=1)
    cluster_images: int = Field(8, ge=1, description="images per cluster in the cluster gallery")
    thumbnail: int = Field(96, ge=16, le=512, description="thumbnail edge in pixels")


class ServeConfig(StrictModel):
    """The web explorer (``serve``): where it listens and what it accepts from the network."""

    host: str = Field("127.0.0.1", description="bind address; 0.0.0.0 exposes it to the network")
    port: int = Field(8000, ge=0, le=65535)
    max_upload_bytes: int = Field(10_000_000, ge=1024, le=1_000_000_000, description="larger request bodies get 413")
    max_pixels: int = Field(40_000_000, ge=1, description="larger images get 400 (decompression bombs)")
    max_k: int = Field(100, ge=1, le=1000, description="most neighbours or users one request may ask for")
    inference_threads: int = Field(2, ge=1, description="uploads embedded at once; the rest queue")
    torch_threads: int = Field(
        1, ge=0, description="threads per forward pass; 1 lets concurrent requests share cores, 0 = torch's default"
    )
    page_size: int = Field(60, ge=1, le=1000, description="items per page of the grid")
    writable: bool = Field(
        False,
        description="turn on the write endpoints (add and remove items, log events); beyond 127.0.0.1 they need a "
        "token (serve --token or SOCIALFEAT_TOKEN, never a config key)",
    )
    runtime: Literal["auto", "onnx", "torch"] = Field(
        "auto",
        description="what runs a new image's forward pass in serve, similar/recommend --image and embed --images: "
        "onnx (ONNX Runtime on the run's export, made once and cached in RUN/export/), torch, or auto (onnx when "
        "the export extra is installed and the model exports, else torch)",
    )


class TransferSet(StrictModel):
    """One labelled image collection for ``transfer``: a table of image paths and labels, and the folder the paths
    are relative to."""

    name: str = Field(..., description="names the output eval/transfer-<name>.json (letters, digits, . _ -)")
    labels: Path = Field(..., description="CSV/TSV/Parquet/JSONL table with an image path and a label per row")
    image_root: Path = Field(..., description="folder the image paths are relative to")
    image_column: str = "image"
    label_column: str = "label"


class TransferConfig(StrictModel):
    """Transfer evaluation: linear probes of every feature source on labelled image collections the model never saw
    (the seed papers' Flickr Style / Wikipaintings / AVA style / Emotion6 tables)."""

    sets: list[TransferSet] = Field(default_factory=list, description="labelled collections; `run` probes each")
    folds: int = Field(5, ge=2, le=100, description="stratified k-fold of the accuracy (mean ± std)")
    inner_folds: int = Field(3, ge=2, description="inner cross-validation that picks C within each training fold")
    few_shot: list[int] = Field([1, 5, 10, 20], description="labels per class of the few-shot curve")
    draws: int = Field(5, ge=1, description="seeded draws per few-shot point")
    Cs: list[float] = Field(
        [0.1, 1, 10, 100, 1000, 10000], min_length=1, description="inverse L2 regularisation grid of the probe"
    )
    sources: list[Literal["learned", "imagenet", "random", "meta-class"]] = Field(
        ["learned", "imagenet", "random"], description="feature sources probed (learned: pooled and every head)"
    )


class ContentConfig(StrictModel):
    """The content model (``content``): an item's factors from its image, text, tags and numeric columns."""

    sources: list[str] = Field(
        default_factory=list,
        description="content sources to fit and score: learned, imagenet, text, tags, numeric; empty: the stage is off",
    )
    image: str = Field("learned", description="the image source of the full content model (learned or imagenet)")
    text_columns: list[str] = Field(["title", "text"], description="item columns the text source embeds (MiniLM)")
    numeric: list[str] = Field(default_factory=list, description="numeric item columns (standardised + 5 bins)")
    year_from_title: bool = Field(False, description="derive a numeric 'year' from a title ending in '(1995)'")
    max_tags: int = Field(2000, ge=1, description="tag vocabulary: the most frequent tags of the warm items")
    fusion_step: float = Field(0.1, gt=0, lt=1, description="grid step of the late-fusion weights")
    batch_size: int = Field(128, ge=1, description="texts per batch for the text encoder")
    joint: bool = Field(
        True,
        description="also fit the joint ridge (a λ per source, source dropout) beside late fusion; valid picks the model",
    )
    lightfm: bool = Field(True, description="add the LightFM peer row (when the optional lightfm package is there)")
    lightfm_threads: int = Field(0, ge=0, description="threads LightFM fits with; 0 = every core")


class LiveConfig(StrictModel):
    """The live catalogue (``add``, ``remove``, ``log``, ``serve --writable``): items and events since the batch run."""

    warm_after: int = Field(
        5, ge=1, le=1_000_000, description="events after which an added item's folded-in factors replace its prediction"
    )
    sources: list[str] | None = Field(
        None, description="feature sources a new item is embedded under; default: every source the run has features for"
    )
    batch_size: int = Field(32, ge=1, le=4096, description="images per forward pass when several items are added")


class Config(StrictModel):
    """The whole resolved configuration of a run: one section per stage, validated, with every default filled in.

    Build one with :func:`load_config`, which also records where each value came from for error messages.

    Attributes:
        name: The run's name; :func:`socialfeat.pipeline.run` writes to ``runs/<name>`` by default.
        seed: One seed for every stage's randomness, so a rerun gives the same outputs.
        ingest: Where the raw logs are and how to read them.
        filter: Popularity filtering of users and items.
        simulate: Size and shape of the demo platform.
        split: Cold items and per-user held-out interactions.
        factorize: The ALS factorization of the interaction matrix.
        targets: What the image model learns to predict.
        train: The image model and how it trains.
        embed: Feature extraction for the run's items or any table of images.
        index: The nearest-neighbour index over one feature source.
        evaluate: Cold-start, retrieval and probe evaluation.
        report: What the HTML report shows.
        serve: The web explorer.
        transfer: Linear probes on labelled image collections.
        content: The content model of new items.
        live: The live catalogue of items and events since the batch run.
    """

    name: str = "demo"
    seed: int = Field(0, ge=0, le=MAX_INT, description="one seed for every stage's randomness")
    ingest: IngestConfig = IngestConfig()
    filter: FilterConfig = FilterConfig()
    simulate: SimulateConfig = SimulateConfig()
    split: SplitConfig = SplitConfig()
    factorize: FactorizeConfig = FactorizeConfig()
    targets: TargetsConfig = TargetsConfig()
    train: TrainConfig = TrainConfig()
    embed: EmbedConfig = EmbedConfig()
    index: IndexConfig = IndexConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    report: ReportConfig = ReportConfig()
    serve: ServeConfig = ServeConfig()
    transfer: TransferConfig = TransferConfig()
    content: ContentConfig = ContentConfig()
    live: LiveConfig = LiveConfig()
    # where each given value came from (dotted key → --set item, flag or config file), set by load_config
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    _file: str | None = PrivateAttr(None)

    def given_by(self, key: str, flag: str) -> str:
        """How an error about a value names where the user gave it, so they know what to change.

        Args:
            key: The dotted key, such as ``train.epochs``.
            flag: What to name when the origin is unknown, as in a config built in code.

        Returns:
            The ``--set`` item, the flag, or the config file with the key; else ``flag``.
        """
        source = _source_of(key, self._sources)
        if source is None:
            return flag
        return f"{source}: {key}" if source == self._file else source

    def __eq__(self, other: object) -> bool:
        """Equal when the values are: where they were given is no part of a configuration's identity."""
        if not isinstance(other, Config):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__


ECHO_CHARS = 60  # how much of a value a message repeats: never enough to push the reason off one line
_ECHO = reprlib.Repr()
_ECHO.maxstring = _ECHO.maxother = _ECHO.maxlong = ECHO_CHARS - 10
_ECHO.maxlist = _ECHO.maxtuple = _ECHO.maxdict = _ECHO.maxset = 4
_ECHO.maxlevel = 3


def shorten(text: str, limit: int = ECHO_CHARS) -> str:
    """Text a message repeats (a key, a ``--set`` item), on one line and clipped (as ``data.contract.clip``)."""
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def echo(value: Any) -> str:
    """A value a message repeats, as its repr, bounded however large or deep it is: reprlib stops early, so a
    value built from aliases is never expanded in full."""
    return shorten(_ECHO.repr(value))


def set_item(item: str) -> str:
    """How a message names a ``--set`` item: its key, and its value clipped short (the message may echo it)."""
    key, eq, value = item.partition("=")
    return f"--set {shorten(key)}{eq}{shorten(value, 24)}"


def _known_keys(model: type[BaseModel]) -> list[str]:
    return sorted(model.model_fields)


def _check_key(path: list[str], where: str) -> None:
    """Fail with the key's name when ``path`` does not lead to a config field."""
    model: Any = Config
    for depth, part in enumerate(path):
        if model is None:  # inside a free-form dict such as event_weights
            return
        fields = model.model_fields
        if part not in fields:
            key = shorten(".".join(path[: depth + 1]))
            raise UserError(where, f"unknown key '{key}'; expected one of: {', '.join(_known_keys(model))}")
        annotation = fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if model is None and depth < len(path) - 1 and getattr(annotation, "__origin__", None) is not dict:
            raise UserError(where, f"'{shorten('.'.join(path[: depth + 1]))}' is a value, not a section")


def _walk_keys(tree: dict[str, Any], prefix: list[str], where: str) -> None:
    for key, value in tree.items():
        path = [*prefix, str(key)]
        _check_key(path, where)
        if isinstance(value, dict):
            sub: Any = Config
            for part in path:
                annotation = sub.model_fields[part].annotation if sub is not None else None
                sub = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            if sub is not None:
                _walk_keys(value, path, where)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class DuplicateKeyError(yaml.YAMLError):
    """A key given twice in one YAML mapping, which PyYAML would accept silently, keeping the last."""

    def __init__(self, key: Any, first_line: int, line: int) -> None:
        super().__init__(f"key {key!r} on line {line} repeats line {first_line}")
        self.key, self.first_line, self.line = key, first_line, line

    def describe(self) -> str:
        return (
            f"line {self.line}: key '{shorten(str(self.key))}' appears twice in one mapping (first on line {self.first_line}); "
            "keep one: YAML would silently use the last"
        )


def _check_unique_keys(loader: yaml.SafeLoader, node: yaml.Node, seen_nodes: set[int], path: str = "") -> None:
    """Refuse a key written twice in any mapping, nested ones included, in document order (so the first repeat
    in the file is the one named). Keys brought in by a ``<<`` merge may be overridden, as YAML intends."""
    if id(node) in seen_nodes:  # an alias of a node already checked (or a recursive one)
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag != "tag:yaml.org,2002:merge":
                key = loader.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = keys.get(key)
                except TypeError:  # an unhashable key: the constructor reports it
                    first = None
                else:
                    keys.setdefault(key, line)
                if first is not None:
                    raise DuplicateKeyError(f"{path}{key}", first, line)
            _check_unique_keys(loader, value_node, seen_nodes, f"{path}{key_node.value}.")
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_unique_keys(loader, item, seen_nodes, f"{path}{index}.")


class OversizeError(yaml.YAMLError):
    """A document too large or too deep once its aliases are expanded (a "billion laughs"), or one whose alias
    refers to itself: refused before it is constructed, validated or echoed, which could take all memory."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(self._text(reason, line))
        self.reason, self.line = reason, line

    @staticmethod
    def _text(reason: str, line: int | None) -> str:
        return f"line {line}: {reason}" if line is not None else reason

    def describe(self) -> str:
        return self._text(self.reason, self.line)


MAX_NODES = 100_000  # values in a config once every alias is expanded; a real one has a few hundred


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_size(root: yaml.Node, limit: int = MAX_NODES) -> None:
    """Refuse a composed document that expands to more than ``limit`` values, or that holds itself.

    The composed graph shares an aliased node instead of copying it, so each node's expanded size is counted
    once (memoized, without recursion): a billion laughs costs its few distinct nodes, not its billion values.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # started, not finished: meeting one again means an alias inside its own anchor
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > limit:
                raise OversizeError(
                    f"this value expands to more than {limit:,} values (aliases repeating aliases); "
                    "write the values out, or fewer",
                    node.start_mark.line + 1,
                )
        elif key not in sizes:
            if key in open_nodes:
                line = node.start_mark.line + 1
                raise OversizeError("an alias refers to the value that holds it (a recursive value)", line)
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def read_yaml(text: str) -> Any:
    """Parse YAML with PyYAML's safe loader, refusing duplicate keys (:class:`DuplicateKeyError`) that it would
    otherwise accept silently, keeping the last, and a document that expands beyond reason (:class:`OversizeError`)
    before PyYAML builds it."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:  # PyYAML composes nested collections recursively
            raise OversizeError("values nested too deeply (more than a few hundred levels)") from None
        if node is None:
            return None
        _check_size(node)
        _check_unique_keys(loader, node, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``a.b=value``; the value is read as YAML, so ``5``, ``0.1``, ``true``, ``[a, b]`` work."""
    where = set_item(item)
    if "=" not in item:
        raise UserError(where, "expected key=value, e.g. filter.min_user_interactions=10")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(where, "expected a dotted key before '=', e.g. ingest.columns.user=userId")
    try:
        value = read_yaml(raw) if raw.strip() else None
    except DuplicateKeyError as exc:
        raise UserError(where, f"key '{shorten(str(exc.key))}' appears twice; give it once") from None
    except OversizeError as exc:
        raise UserError(where, exc.reason) from None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    tree: Any = value
    for part in reversed(path):
        tree = {part: tree}
    return tree


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    flags: dict[str, tuple[str, Any]] | None = None,
) -> Config:
    """Resolve defaults < YAML file < command-line flags < ``key=value`` overrides into a :class:`Config`.

    Args:
        path: A YAML config file; None for the defaults alone.
        overrides: ``key=value`` items, as ``--set`` gives them; they win over everything else.
        flags: Dotted key to ``(flag name, value)``, so that an error about a bad value names the flag.

    Returns:
        The validated configuration, which remembers where each value came from.

    Raises:
        UserError: A missing or unreadable file, invalid YAML, an unknown key or a bad value, named where it was
            given.
    """
    merged: dict[str, Any] = Config().model_dump()
    sources: dict[str, str] = {}
    if path is not None:
        path = Path(path)
        try:
            found = path.is_file()
        except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL in it
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UserError(shorten(str(path), 200), f"cannot look up this config file: {reason.lower()}") from None
        if not found:
            what = "is a folder; expected a YAML config file" if path.is_dir() else "config file not found"
            raise UserError(str(path), what)
        try:
            text = path.read_text(encoding="utf-8")
            data = read_yaml(text) or {}
        except UnicodeDecodeError as exc:
            line = path.read_bytes()[: exc.start].count(b"\n") + 1
            raise UserError(str(path), f"line {line}: not UTF-8 text; expected a UTF-8 YAML file") from None
        except (DuplicateKeyError, OversizeError) as exc:
            raise UserError(str(path), exc.describe()) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f"line {mark.line + 1}: " if mark is not None else ""
            raise UserError(str(path), f"{line}not valid YAML") from None
        if not isinstance(data, dict):
            raise UserError(str(path), "expected a mapping of sections (ingest:, filter:, ...) at the top level")
        _walk_keys(data, [], str(path))
        if text.startswith(RELATIVE_HEADER):  # a config socialfeat recorded: its paths are from its own folder
            data = map_paths(data, resolved_from(path.parent))
        merged = _deep_merge(merged, data)
        for key in _flatten(data):
            sources[key] = str(path)
    for key, (flag, value) in (flags or {}).items():
        keys = key.split(".")
        _check_key(keys, flag)
        merged = _deep_merge(merged, _nest(keys, value))
        sources[key] = flag
    for item in overrides:
        keys, value = parse_override(item)
        where = set_item(item)
        _check_key(keys, where)
        merged = _deep_merge(merged, _nest(keys, value))
        for key in _flatten(_nest(keys, value)):
            sources[key] = where
        sources[".".join(keys)] = where
    try:
        config = Config.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        where = _source_of(key, sources) or "config"
        msg = err["msg"].lower().removeprefix("value error, ")
        raise UserError(where, f"{shorten(key)}: {msg} (got {echo(err.get('input'))})") from None
    config._sources, config._file = sources, None if path is None else str(path)
    return config


def _flatten(tree: Any, prefix: str = "") -> list[str]:
    """Every dotted key ``tree`` gives, sections included: ``seed: {x: 1}`` gives ``seed`` and ``seed.x``, so that an
    error about ``seed`` is blamed on the file that wrote it."""
    keys = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            keys.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return keys


def _source_of(key: str, sources: dict[str, str]) -> str | None:
    while key:
        if key in sources:
            return sources[key]
        key = key.rpartition(".")[0]
    return None


def with_paths(config: Config, change: Callable[[str], str]) -> dict[str, Any]:
    """The config as JSON data with ``change`` applied to every file path it names."""
    return map_paths(config.model_dump(mode="json"), change)


def dump_config(config: Config, folder: str | os.PathLike[str] | None = None) -> str:
    """The resolved config as YAML, as written into every output, so that any output says how it was made.

    Either way it names the same files from any working folder.

    Args:
        config: The configuration to write.
        folder: Where the file goes: paths become relative to it, under a header that says so. None keeps
            them absolute.

    Returns:
        The YAML text.
    """
    if folder is None:
        return yaml.safe_dump(with_paths(config, absolute), sort_keys=False)
    return RELATIVE_HEADER + yaml.safe_dump(with_paths(config, relative_to(folder)), sort_keys=False)


@functools.cache
def _git_sha() -> str | None:
    try:
        with interrupts_held():  # a Ctrl-C during the fork would be lost
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
            )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(config: Config, stage: str) -> dict[str, Any]:
    """What produced an artifact: stage, resolved config, seed, package versions, git sha, time."""
    versions = {"python": platform.python_version()}
    for pkg in ("socialfeat", "duckdb", "pyarrow", "numpy", "pillow", "pydantic", "torch", "timm", "implicit"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "seed": config.seed,
        "git_sha": _git_sha(),
        "versions": versions,
        "config": config.model_dump(mode="json"),
    }
