"""Configuration: pydantic models per stage, merged as defaults < YAML file < ``--set key=value``.

Unknown keys and wrong types are :class:`UserError` s that name the key and where it came from.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from socialfeat.errors import UserError

Format = Literal["csv", "tsv", "parquet", "jsonl"]


class StrictModel(BaseModel):
    """Rejects unknown keys, so a typo in a config never passes silently."""

    model_config = ConfigDict(extra="forbid")


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
    event_weights: dict[str, float] = Field(
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
    memory_limit: str = Field("1GB", description="DuckDB memory limit; larger logs spill to disk")
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

    n_users: int = Field(2000, ge=10)
    n_items: int = Field(3000, ge=10)
    image_size: int = Field(96, ge=32, le=512)
    views_per_user: float = Field(60.0, gt=0, description="mean views per user (power-law spread)")
    comment_rate: float = Field(0.25, ge=0, le=1, description="probability that a like comes with a comment")
    share_rate: float = Field(0.08, ge=0, le=1, description="probability that a like comes with a share")


class SplitConfig(StrictModel):
    """Held-out data: cold items (never trained on, for cold-start evaluation) and per-user leave-k-out."""

    cold_items: Path | None = Field(None, description="file item_id,split with split in train/valid/test")
    cold_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="random fraction of items made cold, if no file")
    cold_valid_share: float = Field(0.25, gt=0.0, lt=1.0, description="share of random cold items put in valid")
    leave_out: int = Field(1, ge=1, description="interactions held out per user (latest by time, else random)")
    min_train: int = Field(2, ge=1, description="a user keeps at least this many training interactions")


class FactorizeConfig(StrictModel):
    """Implicit-feedback ALS. Confidence c = 1 + α·w (linear) or 1 + α·log(1 + w/ε) (log)."""

    backend: Literal["local", "spark"] = "local"
    factors: int = Field(64, ge=1)
    regularization: float = Field(20.0, ge=0.0, description="λ on ‖x‖² and ‖y‖² (implicit's convention, unscaled)")
    iterations: int = Field(15, ge=1)
    confidence: Literal["linear", "log"] = "linear"
    alpha: float = Field(10.0, gt=0.0)
    epsilon: float = Field(1.0, gt=0.0)
    threads: int = Field(0, ge=0, description="0 = all cores")
    use_gpu: bool | None = Field(None, description="None = the GPU when implicit has CUDA and one is present")
    cg_steps: int = Field(3, ge=1)
    log_loss: bool = Field(False, description="compute the training loss each iteration (costs a pass)")
    evaluate: bool = Field(True, description="hold out data, fit, and measure ranking before the final fit")
    k: int = Field(20, ge=1, description="cut-off of the ranking metrics")
    eval_users: int = Field(20000, ge=0, description="users sampled for the metrics; 0 = all")
    sweep: dict[str, list[float]] = Field(default_factory=dict, description="grid: {factors: [32, 64], alpha: [1, 10]}")
    spark_master: str = "local[*]"
    spark_conf: dict[str, str] = Field(default_factory=dict)


class TargetsConfig(StrictModel):
    """What the image model learns to predict: item factors, pseudo-classes from clustering them, and VisE-style
    engagement pseudo-classes from clustering what people say about an item and how they engage with it."""

    targets: list[Literal["factors", "factor-clusters", "engagement", "tags"]] = ["factors", "factor-clusters"]
    normalize: Literal["l2", "standardize", "none"] = Field("l2", description="how factor targets are scaled")
    clusters: int = Field(32, ge=2, description="k of the k-means on item factors (pseudo-classes)")
    kmeans_iterations: int = Field(25, ge=1)
    words: int = Field(10, ge=1, description="distinctive words listed per cluster")
    representatives: int = Field(5, ge=1, description="item ids listed per cluster (closest to its centre)")
    min_word_items: int = Field(3, ge=1, description="a word must occur with this many items to describe a cluster")
    engagement_clusters: int = Field(32, ge=2, description="k of the k-means on engagement (comments + counts)")
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
    finetune: str = Field("last-2", description="all, head (frozen backbone) or last-N (the last N blocks)")
    head_epochs: int = Field(0, ge=0, description="first epochs train the heads only, then fine-tune (LP-FT)")
    image_size: int = Field(224, ge=16, le=1024)
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1, description="global batch: split across DDP ranks")
    lr: float = Field(1e-3, gt=0, description="peak learning rate of the heads")
    backbone_lr_scale: float = Field(0.1, ge=0, description="backbone lr = lr × this")
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(20, ge=0)
    dropout: float = Field(0.1, ge=0, lt=1, description="before the heads")
    augment: bool = Field(True, description="random crop and horizontal flip")
    valid_fraction: float = Field(0.1, ge=0, lt=1, description="warm items held out for validation each epoch")
    workers: int | None = Field(
        None,
        ge=0,
        description="DataLoader worker processes; default 0 on CPU (they would compete with the model), "
        "up to 8 per GPU",
    )
    checkpoint_every: int = Field(0, ge=0, description="also checkpoint every N steps; 0 = once per epoch")
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

    batch_size: int = Field(128, ge=1)
    workers: int = Field(0, ge=0, description="DataLoader workers: on CPU they compete with the model")
    block_stats: int = Field(
        0,
        ge=0,
        le=8,
        description="append per-channel mean and std of the last N blocks' outputs to the pooled features, for every "
        "source alike (richer features for the ridge map and the probes); 0: the pooled features only",
    )


class IndexConfig(StrictModel):
    """Nearest-neighbour index over one feature source (faiss)."""

    source: str = Field("learned", description="feature source: learned, imagenet or random")
    column: str = Field("features", description="column of features/<source>.parquet to index")
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
    k: int = Field(20, ge=1, description="cut-off of recall@k and NDCG@k")
    ridge_lambdas: list[float] = Field([0.1, 1, 10, 100, 1_000, 10_000, 100_000], min_length=1)
    neighbours: int = Field(10, ge=1, description="neighbours per query in the behavioural retrieval test")
    few_shot: int = Field(5, ge=1, description="labelled items per class in the few-label probe")
    max_queries: int = Field(2000, ge=1, description="queries sampled for the retrieval test")


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
    max_upload_bytes: int = Field(10_000_000, ge=1024, description="larger request bodies get 413")
    max_pixels: int = Field(40_000_000, ge=1, description="larger images get 400 (decompression bombs)")
    max_k: int = Field(100, ge=1, le=1000, description="most neighbours or users one request may ask for")
    inference_threads: int = Field(2, ge=1, description="uploads embedded at once; the rest queue")
    torch_threads: int = Field(
        1, ge=0, description="threads per forward pass; 1 lets concurrent requests share cores, 0 = torch's default"
    )
    page_size: int = Field(60, ge=1, le=1000, description="items per page of the grid")
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
    folds: int = Field(5, ge=2, description="stratified k-fold of the accuracy (mean ± std)")
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


class Config(StrictModel):
    """The whole resolved configuration of a run."""

    name: str = "demo"
    seed: int = 0
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
            key = ".".join(path[: depth + 1])
            raise UserError(where, f"unknown key '{key}'; expected one of: {', '.join(_known_keys(model))}")
        annotation = fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if model is None and depth < len(path) - 1 and getattr(annotation, "__origin__", None) is not dict:
            raise UserError(where, f"'{'.'.join(path[: depth + 1])}' is a value, not a section")


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


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``a.b=value``; the value is read as YAML, so ``5``, ``0.1``, ``true``, ``[a, b]`` work."""
    where = f"--set {item}"
    if "=" not in item:
        raise UserError(where, "expected key=value, e.g. filter.min_user_interactions=10")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(where, "expected a dotted key before '=', e.g. ingest.columns.user=userId")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
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

    ``flags`` maps a dotted key to ``(flag name, value)`` so that a bad value names the flag.
    """
    merged: dict[str, Any] = Config().model_dump()
    sources: dict[str, str] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(str(path), "config file not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f"line {mark.line + 1}: " if mark is not None else ""
            raise UserError(str(path), f"{line}not valid YAML") from None
        if not isinstance(data, dict):
            raise UserError(str(path), "expected a mapping of sections (ingest:, filter:, ...) at the top level")
        _walk_keys(data, [], str(path))
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
        where = f"--set {item}"
        _check_key(keys, where)
        merged = _deep_merge(merged, _nest(keys, value))
        for key in _flatten(_nest(keys, value)):
            sources[key] = where
        sources[".".join(keys)] = where
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        where = _source_of(key, sources) or "config"
        raise UserError(where, f"{key}: {err['msg'].lower()} (got {err.get('input')!r})") from None


def _flatten(tree: Any, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict):
        return [prefix]
    keys = []
    for key, value in tree.items():
        keys.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return keys


def _source_of(key: str, sources: dict[str, str]) -> str | None:
    while key:
        if key in sources:
            return sources[key]
        key = key.rpartition(".")[0]
    return None


def dump_config(config: Config) -> str:
    """The resolved config as YAML (paths as strings), as written into every output."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _git_sha() -> str | None:
    try:
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
