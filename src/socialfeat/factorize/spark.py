"""Spark MLlib backend: the same implicit-feedback ALS objective, fitted by ``pyspark.ml.recommendation.ALS``.

Both backends minimize Σ_ui c_ui (p_ui − x_uᵀ y_i)² + λ (Σ‖x_u‖² + Σ‖y_i‖²), with p_ui = 1 where the
confidence matrix stores a value. Two conventions differ between ``implicit`` and Spark, and this module maps
one onto the other:

**Confidence.** The local backend (``implicit``'s ALS with ``alpha=1``) uses each stored value as c_ui
directly. Spark's ``ALS(implicitPrefs=True, alpha=a)`` reads a rating r and uses c = 1 + a·|r| with p = 1
only when r > 0. We therefore hand Spark r = c − 1 with ``alpha=1.0``, which gives back exactly the same
confidences. A stored c of exactly 1 would become r = 0, which Spark treats as p = 0 (and skips), so
ratings are floored at r = 1e-6 (c = 1.000001): the pair stays a positive with practically the same weight.

**Regularization (approximate).** ``implicit`` adds λ·I to every user's and every item's normal equations.
Spark follows ALS-WR (Zhou et al. 2008) and adds regParam·n·I, where n is the number of positive ratings of
the user (or item) being solved. No single regParam reproduces a constant λ for everyone, so
:func:`spark_reg_param` uses regParam = λ / (mean ratings per user), i.e. λ / (nnz / users with ratings):
a user with the average number of interactions gets exactly λ; heavier users are regularized more and
lighter users less than with ``implicit``. Items are solved with the same regParam, so an item is
regularized with λ·n_i / (mean per user), which matches λ only for items with that many ratings. Factors
from the two backends are therefore close in quality but not numerically identical.

**Iteration callback.** Spark exposes no per-iteration hook; the callback is called once, after the fit,
as ``callback(iterations - 1, total_seconds, None)``.

**Session.** :func:`spark_session` builds (or reuses, via ``getOrCreate``) one SparkSession per process and
keeps it for later fits, because starting the JVM takes seconds; it is stopped, and its temporary folders
removed, at interpreter exit. The
ratings go to Spark through a temporary Parquet file written with pyarrow (no pandas, no Python lists), so
the hand-over scales with the data. With a non-local master, executors must be able to read that file: set
``spark_conf["spark.socialfeat.stagingDir"]`` to a folder or URI (``hdfs://…``, ``s3://…``, a shared mount)
that both this process (via pyarrow) and the executors can reach; by default it is a local temporary folder.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from socialfeat.config import FactorizeConfig
from socialfeat.errors import UserError
from socialfeat.factorize.base import Factorizer, Factors, IterationCallback, check_confidence, check_factors

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

APP_NAME = "socialfeat-factorize"
# Spark conf key (ours, ignored by Spark) naming where the ratings Parquet is staged for non-local masters
STAGING_KEY = "spark.socialfeat.stagingDir"
# smallest rating handed to Spark, so that a confidence of exactly 1 still counts as a positive (p = 1)
MIN_RATING = 1e-6
CHECKPOINT_INTERVAL = 10

_USER, _ITEM, _RATING = "user", "item", "rating"

# the session this module created, with the settings it was built from, and its scratch folder
_session: SparkSession | None = None
_session_key: tuple[Any, ...] | None = None
_scratch: str | None = None


def spark_reg_param(lam: float, confidence: sp.csr_matrix) -> float:
    """Spark's ``regParam`` that approximates ``implicit``'s constant λ on this confidence matrix.

    Spark (ALS-WR) regularizes each user's solve with regParam·n_u and each item's with regParam·n_i, where
    n is that row's or column's number of positive ratings; ``implicit`` uses λ for every one. Returning
    λ / (nnz / number of users with at least one rating) — λ divided by the mean interactions per user —
    makes the average user's penalty exactly λ. It is an approximation: users (and items) with more
    ratings than that mean are regularized more than under ``implicit``, those with fewer less.
    An empty matrix returns λ unchanged.
    """
    confidence = sp.csr_matrix(confidence)
    nnz = int(confidence.nnz)
    users_with_ratings = int(np.count_nonzero(np.diff(confidence.indptr)))
    if nnz == 0 or users_with_ratings == 0:
        return float(lam)
    return float(lam) / (nnz / users_with_ratings)


def _import_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
        from pyspark.ml.recommendation import ALS  # noqa: F401
        from pyspark.sql import SparkSession  # noqa: F401
    except ImportError:
        raise UserError("--backend spark", "needs pyspark: pip install 'socialfeat[spark]' (and Java 17)") from None


def _local_cores(master: str) -> int | None:
    """Cores of a ``local``/``local[N]``/``local[*]``/``local[N,F]`` master; None when the master is not local."""
    master = master.strip()
    if master == "local":
        return 1
    match = re.fullmatch(r"local\[(\*|\d+)(?:,\s*\d+)?\]", master)
    if match is None:
        return None
    if match.group(1) == "*":
        return os.cpu_count() or 1
    return max(1, int(match.group(1)))


def _scratch_dir() -> str:
    global _scratch
    if _scratch is None or not os.path.isdir(_scratch):
        _scratch = tempfile.mkdtemp(prefix="socialfeat-spark-")
    return _scratch


def _stop_session() -> None:
    """Stop the session this module created, if any (the JVM and the scratch folder stay for a new one)."""
    global _session, _session_key
    if _session is not None:
        try:
            _session.stop()
        except Exception:  # the JVM may already be gone
            pass
    _session = None
    _session_key = None


def _shutdown() -> None:
    """At interpreter exit: stop our session, let our JVM exit, then remove the scratch folder.

    The JVM's shutdown hooks recreate ``spark.local.dir``, so the folder is removed only once it has exited.
    """
    global _scratch
    owned = _session is not None
    _stop_session()
    if owned:
        try:
            from pyspark import SparkContext

            gateway = SparkContext._gateway
            proc = getattr(gateway, "proc", None)
            if gateway is not None:
                gateway.shutdown()
                SparkContext._gateway = None
                SparkContext._jvm = None
            if proc is not None and proc.stdin is not None:
                proc.stdin.close()  # pyspark's gateway JVM exits when its stdin closes
                proc.wait(timeout=30)
        except Exception:
            pass
    if _scratch is not None:
        shutil.rmtree(_scratch, ignore_errors=True)
        _scratch = None


atexit.register(_shutdown)


def spark_session(config: FactorizeConfig) -> SparkSession:
    """The process's SparkSession for ``config`` (master, ``spark_conf``), created once and then reused.

    Settings: no web UI; driver memory 4g unless ``spark_conf`` names it; Arrow transfers enabled; on a local
    master few shuffle partitions (2 × cores) and a temporary ``spark.local.dir``; then every key of
    ``config.spark_conf``, which wins. If a different master or ``spark_conf`` is asked for, the session this
    module created is stopped and a new one started. A session created elsewhere is reused as is
    (``getOrCreate``), and never stopped here.
    """
    global _session, _session_key
    _import_pyspark()
    from pyspark.sql import SparkSession

    key = (config.spark_master, tuple(sorted(config.spark_conf.items())))
    if _session is not None:
        alive = _session.sparkContext._jsc is not None
        if alive and key == _session_key:
            return _session
        _stop_session()
    elif SparkSession.getActiveSession() is not None:
        return SparkSession.getActiveSession()

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    scratch = _scratch_dir()
    conf: dict[str, str] = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": "4g",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    cores = _local_cores(config.spark_master)
    if cores is not None:  # on a cluster, executors' scratch space and parallelism are the cluster's business
        conf["spark.sql.shuffle.partitions"] = str(2 * cores)
        conf["spark.local.dir"] = os.path.join(scratch, "local")
    conf.update({str(k): str(v) for k, v in config.spark_conf.items()})

    builder = SparkSession.builder.master(config.spark_master).appName(APP_NAME)
    for name, value in conf.items():
        builder = builder.config(name, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    if cores is not None and session.sparkContext.getCheckpointDir() is None:
        # ALS truncates its lineage every CHECKPOINT_INTERVAL iterations only when a checkpoint dir is set
        session.sparkContext.setCheckpointDir(os.path.join(scratch, "checkpoints"))
    _session, _session_key = session, key
    return session


def _write_ratings(confidence: sp.csr_matrix, staging: str) -> tuple[str, Any, str]:
    """Write (user, item, rating = max(c − 1, MIN_RATING)) as Parquet in a new folder under ``staging``.

    Returns the folder as Spark should read it, and the pyarrow filesystem and path to delete it with.
    """
    from pyarrow import fs as pafs

    coo = confidence.tocoo()
    rating = np.maximum(coo.data.astype(np.float64) - 1.0, MIN_RATING).astype(np.float32)
    table = pa.table(
        {
            _USER: pa.array(coo.row.astype(np.int32, copy=False)),
            _ITEM: pa.array(coo.col.astype(np.int32, copy=False)),
            _RATING: pa.array(rating),
        }
    )
    filesystem, root = pafs.FileSystem.from_uri(staging) if "://" in staging else (pafs.LocalFileSystem(), staging)
    root = root.rstrip("/")
    folder = f"{root}/ratings-{uuid.uuid4().hex}"
    filesystem.create_dir(folder, recursive=True)
    # several row groups so that Spark reads the file with several tasks
    row_group = max(1 << 16, -(-table.num_rows // 16))
    pq.write_table(table, f"{folder}/part-0.parquet", filesystem=filesystem, row_group_size=row_group)
    uri = f"{staging.rstrip('/')}/{folder.rsplit('/', 1)[1]}" if "://" in staging else folder
    return uri, filesystem, folder


def _factor_matrix(frame: DataFrame, n_rows: int, rank: int) -> np.ndarray:
    """Collect an ALS factor DataFrame (id int, features array<float>) into an (n_rows, rank) float32 array."""
    out = np.zeros((n_rows, rank), dtype=np.float32)
    if hasattr(frame, "toArrow"):  # pyspark >= 4.0
        table = frame.select("id", "features").toArrow()
        if table.num_rows == 0:
            return out
        ids = table.column("id").to_numpy()
        features = table.column("features").combine_chunks()
        values = features.flatten().to_numpy(zero_copy_only=False)
        vectors = values.astype(np.float32, copy=False).reshape(table.num_rows, rank)
    else:
        try:  # pyspark 3.5: Arrow-backed toPandas (spark.sql.execution.arrow.pyspark.enabled is set)
            pdf = frame.select("id", "features").toPandas()
            ids = pdf["id"].to_numpy()
            vectors = np.asarray(pdf["features"].tolist(), dtype=np.float32).reshape(len(pdf), rank)
        except ImportError:  # no pandas
            rows = frame.select("id", "features").collect()
            ids = np.asarray([row[0] for row in rows], dtype=np.int64)
            vectors = np.asarray([row[1] for row in rows], dtype=np.float32).reshape(len(rows), rank)
    out[ids.astype(np.int64, copy=False)] = vectors
    return out


def _persistent_rdd_ids(session: SparkSession) -> set[int]:
    try:
        return {int(k) for k in session.sparkContext._jsc.getPersistentRDDs().keySet()}
    except Exception:  # private API; cleanup is best effort
        return set()


def _unpersist_new(session: SparkSession, before: set[int]) -> None:
    """Unpersist the RDDs cached since ``before`` (ALS keeps its final factors cached in the JVM)."""
    try:
        persistent = session.sparkContext._jsc.getPersistentRDDs()
        for rdd_id in list(persistent.keySet()):
            if int(rdd_id) not in before:
                persistent.get(rdd_id).unpersist(False)
    except Exception:
        pass


class SparkALS(Factorizer):
    """Implicit ALS with Spark MLlib; same confidences as the local backend, λ mapped by :func:`spark_reg_param`."""

    name = "spark"

    def fit(self, confidence: sp.csr_matrix, callback: IterationCallback | None = None) -> Factors:
        """Fit on a users × items CSR matrix of confidences c_ui ≥ 1; factors of empty rows/columns are zero.

        Spark has no per-iteration hook: ``callback`` is called once, at the end, with
        ``(iterations - 1, total seconds, None)``.
        """
        check_confidence(confidence)
        _import_pyspark()
        from pyspark.ml.recommendation import ALS

        start = time.perf_counter()
        confidence = sp.csr_matrix(confidence)
        if not confidence.has_canonical_format:
            confidence = confidence.copy()
            confidence.sum_duplicates()
        n_users, n_items = confidence.shape
        rank = self.config.factors
        if confidence.nnz == 0:
            factors = Factors(np.zeros((n_users, rank), np.float32), np.zeros((n_items, rank), np.float32))
            if callback is not None:
                callback(self.config.iterations - 1, time.perf_counter() - start, None)
            return factors

        session = spark_session(self.config)
        staging = self.config.spark_conf.get(STAGING_KEY) or os.path.join(_scratch_dir(), "staging")
        uri, filesystem, folder = _write_ratings(confidence, staging)
        cached_before = _persistent_rdd_ids(session)
        try:
            ratings = session.read.parquet(uri)
            als = ALS(
                rank=rank,
                maxIter=self.config.iterations,
                regParam=spark_reg_param(self.config.regularization, confidence),
                alpha=1.0,
                implicitPrefs=True,
                nonnegative=False,
                seed=self.seed,
                userCol=_USER,
                itemCol=_ITEM,
                ratingCol=_RATING,
                checkpointInterval=CHECKPOINT_INTERVAL,
            )
            cores = _local_cores(self.config.spark_master)
            if cores is not None:  # one block per core instead of Spark's fixed 10
                als.setNumUserBlocks(max(2, cores)).setNumItemBlocks(max(2, cores))
            model = als.fit(ratings)
            users = _factor_matrix(model.userFactors, n_users, rank)
            items = _factor_matrix(model.itemFactors, n_items, rank)
        finally:
            _unpersist_new(session, cached_before)
            try:
                filesystem.delete_dir(folder)
            except Exception:
                pass
        if callback is not None:
            callback(self.config.iterations - 1, time.perf_counter() - start, None)
        return check_factors(Factors(users=users, items=items))
