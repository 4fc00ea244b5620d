"""A simulated image-sharing platform: the embedded demo data set.

Why: socialfeat learns image features from engagement. To show (and test) that this works
without real user data, we generate images plus an interaction log driven by *hidden* user
tastes, so we know which visual attributes engagement really depends on.

Hidden structure (written to ``labels.csv``, never used by the learner):

* Item attributes that tastes DEPEND on: ``palette`` (warm, cool, pastel, neon, earth, mono;
  each a few related colours, jittered per image), ``texture`` of the background (gradient,
  stripes, dots, grain, checker; jittered period, angle, phase) and ``composition`` (centered,
  thirds = off-centre, scattered = many small objects, full = one object filling the frame).
* Attributes users IGNORE: ``object`` (circle, square, triangle, star, ring, cross: the
  "content" an ImageNet classifier is good at) and per-image nuisance (rotation, scale and
  position jitter, brightness jitter, background noise).
* Items have a log-normal latent ``popularity`` (a few items get many views).
* Users have sparse Dirichlet preference weights over palette, texture and composition values
  and a power-law activity level; a few bot-like heavy users view and like at random.
* A user views items with probability ∝ popularity × (0.8·affinity³ + 0.2·uniform), so views
  carry taste signal, with noise; a like follows a view with a probability logistic in the
  affinity; a like brings a comment (``comment_rate``) and a share (``share_rate``, higher for
  high affinity). Comments mix taste words for what the user likes about the item with
  generic and noise words; the object is mentioned rarely.

Everything is deterministic given the seed and the config.
"""

from __future__ import annotations

import contextlib
import csv
import multiprocessing
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from socialfeat.atomic import atomic_dir, claim_dir
from socialfeat.config import SimulateConfig
from socialfeat.errors import UserError, interrupts_held

Progress = Callable[[str, int, int], None]
RGB = tuple[int, int, int]

PALETTES: dict[str, list[RGB]] = {
    "warm": [(231, 76, 60), (243, 156, 18), (241, 196, 15), (192, 57, 43), (255, 127, 80)],
    "cool": [(41, 128, 185), (26, 188, 156), (52, 73, 94), (93, 173, 226), (110, 90, 200)],
    "pastel": [(255, 209, 220), (204, 229, 255), (214, 250, 214), (255, 247, 200), (230, 210, 255)],
    "neon": [(57, 255, 20), (255, 20, 147), (0, 255, 255), (255, 255, 0), (191, 0, 255)],
    "earth": [(139, 90, 43), (107, 142, 35), (160, 82, 45), (210, 180, 140), (85, 107, 47)],
    "mono": [(20, 20, 20), (90, 90, 90), (160, 160, 160), (235, 235, 235), (55, 55, 55)],
}
TEXTURES = ("gradient", "stripes", "dots", "grain", "checker")
COMPOSITIONS = ("centered", "thirds", "scattered", "full")
OBJECTS = ("circle", "square", "triangle", "star", "ring", "cross")
ATTR_VALUES = {"palette": tuple(PALETTES), "texture": TEXTURES, "composition": COMPOSITIONS, "object": OBJECTS}
TASTE_WEIGHT = {"palette": 0.45, "texture": 0.35, "composition": 0.20}  # share of each in the affinity
TASTE_ALPHA = {"palette": 0.3, "texture": 0.3, "composition": 0.5}  # Dirichlet concentration: small = sparse
EVENTS = ("view", "like", "comment", "share")
START = np.datetime64("2024-03-01T00:00:00", "s")
DAYS = 90
HORIZON_S = DAYS * 86400
EXPLORE = 0.2  # share of views that ignore taste
TASTE_SHARPNESS = 3.0  # views follow affinity**3: people mostly look at what they like, as on real platforms
LIKE_SLOPE, LIKE_MID = 1.6, 2.6  # like probability = sigmoid(slope·(affinity − mid) + 0.4·z(popularity))
BOT_LIKE_P = 0.15
POP_SIGMA = 1.2
MIN_VIEWS = 5
ROUNDS = 30  # at most this many rounds of draws to find each user's distinct views
VIEWS_PER_SESSION = 12
SUPERSAMPLE = 2
IMAGE_CHUNK = 128  # images per task of the drawing pool
# random streams, so that e.g. the images do not change when the user count does
S_ITEMS, S_USERS, S_VIEWS, S_EVENTS, S_TEXT, S_IMAGES, S_COLLECTION = range(7)

VOCAB: dict[str, dict[str, list[str]]] = {
    "palette": {
        "warm": ["sunset", "glowing", "amber", "fiery", "cozy", "golden", "warm"],
        "cool": ["icy", "ocean", "calm", "chill", "blue", "frosty", "serene"],
        "pastel": ["soft", "dreamy", "gentle", "candy", "delicate", "pastel", "airy"],
        "neon": ["electric", "vivid", "bright", "rave", "neon", "popping", "loud"],
        "earth": ["earthy", "rustic", "natural", "autumn", "woody", "muted", "organic"],
        "mono": ["monochrome", "gray", "minimal", "classic", "stark", "grayscale", "timeless"],
    },
    "texture": {
        "gradient": ["smooth", "fade", "silky", "blended", "flowing"],
        "stripes": ["lines", "rhythm", "stripes", "linear", "bands"],
        "dots": ["dots", "polka", "dotty", "spots", "bubbly"],
        "grain": ["grainy", "gritty", "film", "raw", "textured"],
        "checker": ["checkered", "grid", "tiled", "chess", "checkerboard"],
    },
    "composition": {
        "centered": ["centered", "focused", "balanced", "symmetric", "bold"],
        "thirds": ["offset", "thirds", "breathing", "asymmetric", "space"],
        "scattered": ["busy", "confetti", "scattered", "chaotic", "playful"],
        "full": ["filled", "immersive", "zoomed", "huge", "edge"],
    },
}
GENERIC = ["nice", "love this", "cool", "wow", "amazing", "great", "so good", "beautiful", "yes", "favorite"]
NOISE = ["today", "again", "lol", "friday", "here", "just", "really", "the", "my", "omg", "vibe", "ok"]
TITLE_ADJ = ["quiet", "little", "big", "lost", "new", "old", "bright", "hidden", "simple", "odd"]
TITLE_NOUN = ["study", "piece", "moment", "sketch", "form", "dream", "thing", "mood", "draft"]
NOISE_TAGS = ["art", "abstract", "daily", "digital", "design", "mood", "weekend", "new", "generative", "shapes"]


def _rng(seed: int, stream: int, *extra: int) -> np.random.Generator:
    """An independent generator per stream (and per item for images)."""
    return np.random.default_rng([seed, stream, *extra])


# ---------------------------------------------------------------- images


def _palette_colours(palette: str, rng: np.random.Generator) -> np.ndarray:
    """Three jittered colours of ``palette``: two for the background, the most distinct for objects."""
    base = np.asarray(PALETTES[palette], dtype=np.float32)
    pick = rng.permutation(len(base))
    c0, c1 = base[pick[0]], base[pick[1]]
    rest = base[pick[2:]]
    c2 = rest[np.argmax(np.abs(rest - (c0 + c1) / 2).sum(axis=1))]
    cols = np.stack([c0, c1, c2])
    if palette == "mono":  # stay grey: shared jitter, tiny per-channel jitter
        cols = cols + rng.normal(0, 14, (3, 1)) + rng.normal(0, 2, (3, 3))
    else:
        cols = cols + rng.normal(0, 12, (3, 3))
    return np.clip(cols, 0, 255)


def _texture(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size``×``size`` mix mask in [0, 1] (0 = first colour) with jittered pattern parameters."""
    unit = size / 96
    y, x = _grid(size)
    theta = rng.uniform(0, np.pi)
    if texture == "stripes":
        theta = rng.integers(0, 4) * np.pi / 4 + rng.normal(0, 0.12)
    cos, sin = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    u = x * cos + y * sin
    v = y * cos - x * sin
    if texture == "gradient":
        t = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
        t = t ** rng.uniform(0.7, 1.4)
    elif texture == "stripes":
        period = rng.uniform(8, 16) * unit
        t = ((u / period + rng.random()) % 1.0) < rng.uniform(0.4, 0.6)
    elif texture == "dots":
        period = rng.uniform(10, 16) * unit
        radius = period * rng.uniform(0.22, 0.34)
        du = ((u / period + rng.random()) % 1.0 - 0.5) * period
        dv = ((v / period + rng.random()) % 1.0 - 0.5) * period
        t = du**2 + dv**2 < radius**2
    elif texture == "grain":
        cells = int(rng.integers(5, 10))
        low = Image.fromarray(rng.random((cells, cells)).astype(np.float32), "F")
        smooth = np.asarray(low.resize((size, size), Image.BICUBIC), dtype=np.float32)
        t = np.clip(smooth + 0.25 * rng.standard_normal((size, size), dtype=np.float32), 0, 1)
    elif texture == "checker":
        period = rng.uniform(10, 18) * unit
        t = (np.floor(u / period + rng.random()) + np.floor(v / period + rng.random())) % 2 == 1
    else:
        raise ValueError(f"unknown texture {texture!r}")
    return np.asarray(t, dtype=np.float32)


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (y, x), cached: every image of a run has the same size."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    y.flags.writeable = x.flags.writeable = False
    return y, x


def _placements(composition: str, size: int, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """Centres and radii of the objects for a composition, with scale and position jitter."""
    s = float(size)
    scale = rng.uniform(0.85, 1.15)
    if composition == "centered":
        return [(s / 2 + rng.normal(0, 0.03 * s), s / 2 + rng.normal(0, 0.03 * s), 0.28 * s * scale)]
    if composition == "thirds":
        fx, fy = rng.choice([1 / 3, 2 / 3], 2)
        return [(fx * s + rng.normal(0, 0.03 * s), fy * s + rng.normal(0, 0.03 * s), 0.17 * s * scale)]
    if composition == "scattered":
        n = int(rng.integers(7, 15))
        xy = rng.uniform(0.1 * s, 0.9 * s, (n, 2))
        radii = rng.uniform(0.05, 0.085, n) * s
        return [(float(a), float(b), float(r)) for (a, b), r in zip(xy, radii, strict=True)]
    if composition == "full":
        return [(s / 2 + rng.normal(0, 0.04 * s), s / 2 + rng.normal(0, 0.04 * s), 0.5 * s * scale)]
    raise ValueError(f"unknown composition {composition!r}")


def _shape_polygon(obj: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal object rotated by ``rot`` radians."""
    if obj == "square":
        pts = [(r * np.cos(a), r * np.sin(a)) for a in np.pi / 4 + np.arange(4) * np.pi / 2]
    elif obj == "triangle":
        pts = [(r * np.cos(a), r * np.sin(a)) for a in -np.pi / 2 + np.arange(3) * 2 * np.pi / 3]
    elif obj == "star":
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        pts = [
            (q * np.cos(a), q * np.sin(a)) for q, a in zip(radii, -np.pi / 2 + np.arange(10) * np.pi / 5, strict=True)
        ]
    elif obj == "cross":
        w = 0.32 * r
        pts = [
            (-w, -r),
            (w, -r),
            (w, -w),
            (r, -w),
            (r, w),
            (w, w),
            (w, r),
            (-w, r),
            (-w, w),
            (-r, w),
            (-r, -w),
            (-w, -w),
        ]
    else:
        raise ValueError(f"unknown polygon object {obj!r}")
    c, s = np.cos(rot), np.sin(rot)
    return [(cx + px * c - py * s, cy + px * s + py * c) for px, py in pts]


def _draw_object(
    draw: ImageDraw.ImageDraw, obj: str, xyr: tuple[float, float, float], rot: float, fill: RGB, outline: RGB, line: int
) -> None:
    cx, cy, r = xyr
    box = (cx - r, cy - r, cx + r, cy + r)
    if obj == "circle":
        draw.ellipse(box, fill=fill, outline=outline, width=line)
    elif obj == "ring":
        draw.ellipse(box, outline=fill, width=max(2, int(0.3 * r)))
    else:
        draw.polygon(_shape_polygon(obj, cx, cy, r, rot), fill=fill, outline=outline, width=line)


def draw_image(attrs: dict[str, str], size: int, rng: np.random.Generator) -> Image.Image:
    """Draw one RGB ``size``×``size`` image showing ``attrs`` (palette, texture, composition, object)."""
    big = size * SUPERSAMPLE
    cols = _palette_colours(attrs["palette"], rng)
    mask = Image.fromarray((_texture(attrs["texture"], big, rng) * 255).astype(np.uint8), "L")
    c0, c1, fill = ((int(col[0]), int(col[1]), int(col[2])) for col in cols)
    img = Image.composite(Image.new("RGB", (big, big), c1), Image.new("RGB", (big, big), c0), mask)
    draw = ImageDraw.Draw(img)
    outline = (int(fill[0] * 0.6), int(fill[1] * 0.6), int(fill[2] * 0.6))
    for xyr in _placements(attrs["composition"], big, rng):
        _draw_object(draw, attrs["object"], xyr, rng.uniform(0, 2 * np.pi), fill, outline, SUPERSAMPLE)
    arr = np.asarray(img.reduce(SUPERSAMPLE), dtype=np.float32)
    noise = rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(rng.uniform(1.5, 4.0))  # sensor noise
    arr = arr * np.float32(rng.uniform(0.85, 1.15)) + noise  # brightness jitter
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


# ---------------------------------------------------------------- users, items, events


@dataclass
class Users:
    """Hidden user state: taste weights per taste attribute (rows sum to 1) and view counts."""

    taste: dict[str, np.ndarray]
    n_views: np.ndarray
    is_bot: np.ndarray


def sample_items(n_items: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Attribute value indices (balanced, independent across attributes) and log-normal popularity."""
    items = {}
    for attr, values in ATTR_VALUES.items():
        items[attr] = rng.permutation(np.resize(np.arange(len(values)), n_items))
    items["popularity"] = rng.lognormal(0.0, POP_SIGMA, n_items)
    return items


def _scale_to_mean(activity: np.ndarray, target: float, cap: int) -> np.ndarray:
    """Integer view counts in [1, cap] proportional to ``activity`` with mean ≈ ``target``."""
    lo, hi = 1e-9, 1e9
    for _ in range(100):
        mid = np.sqrt(lo * hi)
        if np.clip(np.rint(mid * activity), 1, cap).mean() < target:
            lo = mid
        else:
            hi = mid
    return np.clip(np.rint(hi * activity), 1, cap).astype(np.int64)


def sample_users(n_users: int, n_items: int, views_per_user: float, rng: np.random.Generator) -> Users:
    """Sparse tastes (most users love 1–2 palettes/textures), power-law activity, a few bots."""
    taste = {a: rng.dirichlet([TASTE_ALPHA[a]] * len(ATTR_VALUES[a]), n_users) for a in TASTE_WEIGHT}
    activity = rng.pareto(1.6, n_users) + 1.0
    is_bot = np.zeros(n_users, dtype=bool)
    is_bot[rng.choice(n_users, max(1, n_users // 1000), replace=False)] = True
    activity[is_bot] = np.inf  # bots hit the cap
    cap = max(1, min(n_items // 2, int(25 * views_per_user)))
    return Users(taste, _scale_to_mean(activity, views_per_user, cap), is_bot)


TASTE_SHAPE = tuple(len(ATTR_VALUES[a]) for a in TASTE_WEIGHT)  # palette × texture × composition: 120 taste classes
N_CLASSES = int(np.prod(TASTE_SHAPE))


def taste_class(items: dict[str, np.ndarray]) -> np.ndarray:
    """Each item's taste class: affinity depends on palette, texture and composition only, so on this index."""
    return np.ravel_multi_index(tuple(items[a] for a in TASTE_WEIGHT), TASTE_SHAPE)


def class_affinity(taste: dict[str, np.ndarray], rows: Any = slice(None)) -> np.ndarray:
    """(users × 120) affinity to each taste class; 1 on average for a uniform taste, up to ~4.5 for a perfect match."""
    grid = np.unravel_index(np.arange(N_CLASSES), TASTE_SHAPE)
    total: Any = 0.0
    for (attr, weight), g in zip(TASTE_WEIGHT.items(), grid, strict=True):
        total = total + (weight * len(ATTR_VALUES[attr])) * taste[attr][rows][:, g].astype(np.float32)
    return total


def _pair_affinity(users: Users, items: dict[str, np.ndarray], u: np.ndarray, i: np.ndarray) -> np.ndarray:
    parts = [(w * len(ATTR_VALUES[a])) * users.taste[a][u, items[a][i]] for a, w in TASTE_WEIGHT.items()]
    return np.stack(parts, axis=1)


@dataclass
class _Classes:
    """Items grouped by taste class, with cumulative popularity: an item of class c ∝ popularity is one
    searchsorted in c's span."""

    order: np.ndarray  # item indices sorted by class
    cum_pop: np.ndarray  # cumulative popularity along ``order``
    start: np.ndarray  # each class's first position in ``order``
    count: np.ndarray  # items per class
    mass: np.ndarray  # popularity per class

    @classmethod
    def of(cls, items: dict[str, np.ndarray]) -> _Classes:
        klass, pop = taste_class(items), items["popularity"]
        order = np.argsort(klass, kind="stable")
        count = np.bincount(klass, minlength=N_CLASSES)
        mass = np.bincount(klass, weights=pop, minlength=N_CLASSES)
        return cls(order, np.cumsum(pop[order]), np.cumsum(count) - count, count, mass)

    def item(self, c: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """An item of each class in ``c``, with probability ∝ popularity."""
        edges = np.r_[0.0, self.cum_pop]
        lo, hi = edges[self.start[c]], edges[self.start[c] + self.count[c]]
        pos = np.searchsorted(self.cum_pop, lo + rng.random(len(c)) * (hi - lo), side="right")
        return self.order[np.clip(pos, self.start[c], self.start[c] + self.count[c] - 1)]


def sample_views(
    users: Users,
    items: dict[str, np.ndarray],
    rng: np.random.Generator,
    progress: Progress | None = None,
    chunk: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) views, linear in users + items + views.

    A view picks a taste class with probability ∝ affinity³ × the class's popularity mass (EXPLORE of them by
    popularity alone), then an item of that class ∝ popularity: per item, popularity × (0.8·affinity³ + 0.2).
    Draws repeat until each user has their count of distinct items; keeping the first distinct ones in draw order
    is sampling without replacement, as a Gumbel top-k over every item would, at a cost per view instead of per
    item. Bots draw uniformly over items."""
    n_users, n_items = len(users.n_views), len(items["popularity"])
    classes = _Classes.of(items)
    explore = EXPLORE * classes.mass / classes.mass.sum()
    us, its = [], []
    for start in range(0, n_users, chunk):
        rows = np.arange(start, min(start + chunk, n_users))
        weighted = class_affinity(users.taste, rows).astype(np.float64) ** TASTE_SHARPNESS * classes.mass
        q = (1 - EXPLORE) * weighted / weighted.sum(axis=1, keepdims=True) + explore
        cum = np.cumsum(q, axis=1)
        cum = (cum / cum[:, -1:] + np.arange(len(rows))[:, None]).ravel()  # row r spans (r, r + 1]
        bots = users.is_bot[rows]

        def draw(local: np.ndarray, cum: np.ndarray = cum, bots: np.ndarray = bots) -> np.ndarray:
            c = np.searchsorted(cum, local + rng.random(len(local)), side="right") - local * N_CLASSES
            picked = classes.item(np.clip(c, 0, N_CLASSES - 1), rng)
            crawl = bots[local]
            picked[crawl] = rng.integers(0, n_items, int(crawl.sum()))  # crawlers ignore popularity and taste
            return picked

        local_u, item = _distinct(draw, users.n_views[rows], n_items)
        us.append(local_u + start)
        its.append(item)
        if progress:
            progress("views", int(rows[-1]) + 1, n_users)
    u, i = np.concatenate(us), np.concatenate(its)
    return _ensure_min_views(u, i, users, n_items, rng)


def _distinct(
    draw: Callable[[np.ndarray], np.ndarray], want: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) pairs, ``want[u]`` distinct items per user: the first distinct ones of repeated draws.

    Each round draws a user's shortfall times how many draws a new item took them last round; a few rounds
    suffice, except for a heavy user whose taste is nearly used up, who gets at most ROUNDS rounds."""
    kept = np.empty(0, np.int64)  # user · n_items + item, sorted
    have = np.zeros(len(want), np.int64)
    factor = np.full(len(want), 1.1)
    for _ in range(ROUNDS):
        short = want - have
        if not short.any():
            break
        n_draw = np.where(short > 0, np.ceil(short * factor).astype(np.int64) + 1, 0)
        local = np.repeat(np.arange(len(want)), n_draw)
        keys = local * n_items + draw(local)
        fresh = keys[~_member(keys, kept)]
        by_key = np.argsort(fresh, kind="stable")
        ordered = fresh[by_key]
        head = np.ones(len(ordered), bool)  # a round may bring nothing new: every draw already kept
        head[1:] = ordered[1:] != ordered[:-1]
        first = np.sort(by_key[head])  # first occurrences, in draw order
        fresh = fresh[first]
        owner = fresh // n_items
        rank = np.arange(len(fresh)) - np.searchsorted(owner, owner)  # draws are grouped by user
        fresh = fresh[rank < short[owner]]
        new = np.bincount(fresh // n_items, minlength=len(want))
        factor = np.clip(n_draw / np.maximum(new, 1) * 1.1, 1.1, 64.0)
        have += new
        kept = np.sort(np.concatenate([kept, fresh]))
    return kept // n_items, kept % n_items


def _member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Whether each of ``keys`` is in ``sorted_keys``: one binary search each."""
    if not len(sorted_keys):
        return np.zeros(len(keys), bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


def _ensure_min_views(
    u: np.ndarray, i: np.ndarray, users: Users, n_items: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Give every item at least MIN_VIEWS views (a "new posts" feed), so none is unusable: viewers are random
    humans who have not seen it yet."""
    humans = np.nonzero(~users.is_bot)[0]
    need = min(MIN_VIEWS, len(humans))
    counts = np.bincount(i, minlength=n_items)
    short = np.nonzero(counts < need)[0]
    if not len(short):
        return u, i
    n_users = len(users.n_views)
    seen = np.isin(i, short)
    seen_keys = i[seen] * n_users + u[seen]
    cand = humans[rng.integers(0, len(humans), (len(short), need * 5))]
    keys = short[:, None] * n_users + cand
    ok = np.zeros(keys.size, bool)
    ok[np.unique(keys, return_index=True)[1]] = True  # the first of duplicates within a row
    ok = ok.reshape(keys.shape) & ~np.isin(keys, seen_keys)
    ok &= np.cumsum(ok, axis=1) <= (need - counts[short])[:, None]
    extra_i, extra_u = short[np.nonzero(ok)[0]], cand[ok]
    return np.concatenate([u, extra_u.astype(u.dtype)]), np.concatenate([i, extra_i.astype(i.dtype)])


def _view_times(view_u: np.ndarray, n_users: int, rng: np.random.Generator) -> np.ndarray:
    """Seconds since START: views grouped into sessions spread over DAYS, increasing within a session."""
    n = len(view_u)
    counts = np.bincount(view_u, minlength=n_users)
    n_sess = 1 + rng.poisson(counts / VIEWS_PER_SESSION)
    first_sess = np.concatenate([[0], np.cumsum(n_sess)[:-1]])
    sess = first_sess[view_u] + np.floor(rng.random(n) * n_sess[view_u]).astype(np.int64)
    starts = rng.uniform(0, HORIZON_S - 6 * 3600, int(n_sess.sum()))
    order = np.lexsort((rng.random(n), sess))
    gaps = rng.exponential(40.0, n) + 3.0
    cs = np.cumsum(gaps)
    s_sorted = sess[order]
    first = np.r_[True, s_sorted[1:] != s_sorted[:-1]]
    before = np.maximum.accumulate(np.where(first, cs - gaps, 0.0))
    t = np.empty(n)
    t[order] = starts[s_sorted] + cs - before
    return np.floor(t).astype(np.int64)


def sample_events(
    users: Users,
    items: dict[str, np.ndarray],
    view_u: np.ndarray,
    view_i: np.ndarray,
    config: SimulateConfig,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """All events sorted by time: columns user, item, event (index into EVENTS), t (seconds since START)."""
    n = len(view_u)
    aff = _pair_affinity(users, items, view_u, view_i).sum(axis=1)
    logpop = np.log(items["popularity"])
    zpop = (logpop - logpop.mean()) / max(float(logpop.std()), 1e-9)
    p_like = 1 / (1 + np.exp(-(LIKE_SLOPE * (aff - LIKE_MID) + 0.4 * zpop[view_i])))
    p_like[users.is_bot[view_u]] = BOT_LIKE_P
    like = rng.random(n) < p_like
    comment = like & (rng.random(n) < config.comment_rate)
    boost = np.clip(aff / max(float(aff[like].mean()) if like.any() else 1.0, 1e-9), 0.3, 3.0)
    share = like & (rng.random(n) < np.clip(config.share_rate * boost, 0, 1))
    t_view = _view_times(view_u, len(users.n_views), rng)
    t_like = t_view + 1 + np.floor(rng.exponential(8.0, n)).astype(np.int64)
    t_comment = t_like + 5 + np.floor(rng.exponential(60.0, n)).astype(np.int64)
    t_share = t_like + 2 + np.floor(rng.exponential(20.0, n)).astype(np.int64)
    parts = [(np.ones(n, bool), t_view), (like, t_like), (comment, t_comment), (share, t_share)]
    cols: dict[str, list[np.ndarray]] = {"user": [], "item": [], "event": [], "t": []}
    for kind, (mask, t) in enumerate(parts):
        cols["user"].append(view_u[mask])
        cols["item"].append(view_i[mask])
        cols["event"].append(np.full(int(mask.sum()), kind, dtype=np.int8))
        cols["t"].append(t[mask])
    ev = {k: np.concatenate(v) for k, v in cols.items()}
    order = np.lexsort((ev["item"], ev["user"], ev["event"], ev["t"]))
    return {k: v[order] for k, v in ev.items()}


# ---------------------------------------------------------------- text


COMMENT_DRAWS = 21  # uniforms a comment uses; drawn for many comments at once


def comment_text(values: dict[str, str], focus: str, r: list[float]) -> str:
    """3–10 words: mostly about ``focus``, the taste attribute the commenter likes in the item, plus filler.

    ``r`` holds COMMENT_DRAWS uniforms in [0, 1): drawn in blocks for many comments, so a comment costs
    microseconds of Python instead of a dozen generator calls."""
    attrs = list(TASTE_WEIGHT)
    vocab = VOCAB[focus][values[focus]]
    first = int(r[2] * len(vocab))
    words = [vocab[first]]
    if r[1] < 0.5:  # a second, different word of the same vocabulary
        words.append(vocab[(first + 1 + int(r[3] * (len(vocab) - 1))) % len(vocab)])
    if r[4] < 0.35:
        other = attrs[int(r[5] * len(attrs))]
        words.append(VOCAB[other][values[other]][int(r[6] * 5)])
    words += [NOISE[int(x * len(NOISE))] for x in r[8 : 8 + int(r[7] * 3)]]
    if r[10] < 0.05:
        words.append(values["object"])
    words = [w for _, w in sorted(zip(r[11 : 11 + len(words)], words, strict=True))]  # shuffled
    words = GENERIC[int(r[17] * len(GENERIC))].split() + words
    words += [NOISE[int(x * len(NOISE))] for x in r[18 : 18 + max(0, 3 - len(words))]]
    text = " ".join(words[:10])
    return text + ("!" if r[20] < 0.3 else "")


def comment_texts(
    values: list[dict[str, str]], items: np.ndarray, liking: np.ndarray, rng: np.random.Generator
) -> list[str]:
    """:func:`comment_text` for each comment on ``items``; its focus is drawn ∝ the commenter's ``liking`` + 0.05
    of each taste attribute in the item. Uniforms are drawn in blocks."""
    attrs = list(TASTE_WEIGHT)
    texts: list[str] = []
    for start in range(0, len(items), 65536):
        block = rng.random((min(65536, len(items) - start), COMMENT_DRAWS))
        cum = np.cumsum(liking[start : start + len(block)] + 0.05, axis=1)
        focus = np.minimum((cum <= block[:, :1] * cum[:, -1:]).sum(axis=1), len(attrs) - 1).tolist()
        rows = zip(items[start : start + len(block)].tolist(), focus, block.tolist(), strict=True)
        texts += [comment_text(values[i], attrs[f], r) for i, f, r in rows]
    return texts


def title_and_tags(values: dict[str, str], rng: np.random.Generator) -> tuple[str, list[str]]:
    """A short title and 2–4 tags; some informative about attributes (object included), some noise."""
    if rng.random() < 0.4:
        adj = VOCAB["palette"][values["palette"]][int(rng.integers(5))]
    else:
        adj = TITLE_ADJ[int(rng.integers(len(TITLE_ADJ)))]
    noun = values["object"] if rng.random() < 0.3 else TITLE_NOUN[int(rng.integers(len(TITLE_NOUN)))]
    title = f"{adj} {noun}".capitalize()
    if rng.random() < 0.3:
        title += f" no. {int(rng.integers(1, 100))}"
    chances = {"palette": 0.5, "texture": 0.35, "composition": 0.15, "object": 0.5}
    tags = [values[a] for a, c in chances.items() if rng.random() < c]
    n_tags = int(rng.integers(2, 5))
    for k in rng.permutation(len(NOISE_TAGS)):
        if len(tags) >= n_tags:
            break
        tags.append(NOISE_TAGS[k])
    tags = tags[:n_tags]
    return title, [tags[k] for k in rng.permutation(len(tags))]


# ---------------------------------------------------------------- output


def _write_csv(path: Path, header: list[str], rows: Any) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


ROWS_PER_PART = 1 << 20  # events turned into text at once: 26M at 423K items took 15 GB as one block


def _parts(n: int) -> Iterator[slice]:
    """Consecutive slices of ``ROWS_PER_PART`` rows: the log is written a part at a time, so the Python strings of
    only one part are alive at once."""
    return (slice(start, start + ROWS_PER_PART) for start in range(0, n, ROWS_PER_PART))


def _stamps(seconds: np.ndarray) -> np.ndarray:
    """ISO times of seconds after the platform's start."""
    return (START + seconds.astype("timedelta64[s]")).astype(str)


def _ids(prefix: str, n: int, width: int) -> np.ndarray:
    width = max(width, len(str(n - 1)))
    return np.array([f"{prefix}{k:0{width}d}" for k in range(n)])


def _readme(config: SimulateConfig, seed: int, counts: dict[str, int]) -> str:
    events = ", ".join(f"{counts[e]} {e}s" for e in EVENTS)
    return (
        "# socialfeat demo platform (simulated)\n\n"
        "Procedurally drawn images and an engagement log generated by `socialfeat.data.simulate`.\n"
        f"Seed {seed}; {config.n_users} users, {config.n_items} items, {config.image_size}x{config.image_size} "
        f"images; {DAYS} days of events: {events}.\n\n"
        "Hidden: user tastes depend on the images' palette, texture and composition only; the drawn object\n"
        "(circle, star, ...) and jitter (rotation, scale, position, brightness, noise) are ignored.\n"
        "Items also have a latent log-normal popularity. `labels.csv` holds the true attributes and\n"
        "popularity for evaluation only; it must not be used for training.\n"
    )


# Worker state of the image pool: the folder, the size and the seed stream, set once per process.
_DRAW: dict[str, Any] = {}


def _init_drawer(folder: str, size: int, seed: int, stream: tuple[int, ...]) -> None:
    _DRAW.update(folder=Path(folder), size=size, seed=seed, stream=stream)


def _draw_chunk(chunk: list[tuple[int, str, dict[str, str]]]) -> int:
    """Draw and save a few images; image ``k`` has its own generator, so no image depends on the scheduling."""
    for k, name, attrs in chunk:
        image = draw_image(attrs, _DRAW["size"], _rng(_DRAW["seed"], *_DRAW["stream"], k))
        image.save(_DRAW["folder"] / f"{name}.png", compress_level=1)
    return len(chunk)


def _write_images(
    folder: Path,
    values: list[dict[str, str]],
    ids: list[str],
    size: int,
    seed: int,
    stream: tuple[int, ...],
    progress: Progress | None = None,
    workers: int = 0,
) -> None:
    """Draw and save every image as ``folder/<id>.png`` on ``workers`` processes (0: one per core).

    Processes, not threads: drawing is mostly Python and numpy under the GIL. Chunks go out in order and an
    error stops the pool, so a failure stops the run within a few chunks. The files are the same whatever the
    worker count."""
    folder.mkdir()
    n = len(ids)
    chunks = ([(k, ids[k], values[k]) for k in range(s, min(s + IMAGE_CHUNK, n))] for s in range(0, n, IMAGE_CHUNK))
    workers = min(workers or os.cpu_count() or 1, -(-n // IMAGE_CHUNK))
    init = (str(folder), size, seed, stream)
    done = 0
    with contextlib.ExitStack() as stack:
        if workers <= 1:
            _init_drawer(*init)
            stack.callback(_DRAW.clear)
            results: Iterator[int] = map(_draw_chunk, chunks)
        else:
            with interrupts_held():  # the workers start by fork: a Ctrl-C meanwhile would be lost
                pool = stack.enter_context(multiprocessing.Pool(workers, _init_drawer, init))
            results = pool.imap(_draw_chunk, chunks)
        for count in results:
            done += count
            if progress:
                progress("images", done, n)


@dataclass
class Platform:
    """A simulated platform before it is written: hidden items and users, and their events sorted by time."""

    items: dict[str, np.ndarray]
    users: Users
    events: dict[str, np.ndarray]


def sample_platform(config: SimulateConfig, seed: int = 0, progress: Progress | None = None) -> Platform:
    """Items, users and events without images or text: what :func:`simulate` writes, and what bench/scale.py's
    pixel-free platform at the seed's size writes with blank images."""
    items = sample_items(config.n_items, _rng(seed, S_ITEMS))
    users = sample_users(config.n_users, config.n_items, config.views_per_user, _rng(seed, S_USERS))
    view_u, view_i = sample_views(users, items, _rng(seed, S_VIEWS), progress)
    events = sample_events(users, items, view_u, view_i, config, _rng(seed, S_EVENTS))
    return Platform(items, users, events)


def simulate(
    out: Path, config: SimulateConfig, seed: int = 0, progress: Progress | None = None, workers: int = 0
) -> dict[str, Any]:
    """Write the demo platform into ``out`` atomically: images, items, interactions, comments and hidden labels.

    Args:
        out: The platform folder: new, empty, or an earlier platform, which is replaced once the new one is done.
        config: How many users and items, their views, comment and share rates, and the image size.
        seed: The seed; the same seed gives the same platform.
        progress: Hears ``(phase, done, total)`` while views are drawn and images are written.
        workers: Processes that draw the images (0: one per core); the output does not depend on it.

    Returns:
        A summary: the seed, the sizes, the rows per file, the count of each event and the bytes written.

    Raises:
        UserError: A negative seed, or an ``out`` that holds something else, so a typo in ``--out`` cannot
            replace someone's folder.
    """
    out = Path(out)
    if seed < 0:
        raise UserError("--seed", f"must be >= 0 (got {seed})")
    claim_dir(out, "platform", flag="--out")  # before the minutes of simulation, not after
    platform = sample_platform(config, seed, progress)
    items, users, ev = platform.items, platform.users, platform.events
    values = [{a: ATTR_VALUES[a][int(items[a][k])] for a in ATTR_VALUES} for k in range(config.n_items)]
    item_ids = _ids("i", config.n_items, 5)
    user_ids = _ids("u", config.n_users, 4)
    event_names = np.array(EVENTS)
    text_rng = _rng(seed, S_TEXT)
    titles = [title_and_tags(v, text_rng) for v in values]
    is_comment = np.nonzero(ev["event"] == EVENTS.index("comment"))[0]
    liking = _pair_affinity(users, items, ev["user"][is_comment], ev["item"][is_comment])
    texts = comment_texts(values, ev["item"][is_comment], liking, text_rng)
    comments = [
        (item_ids[i], user_ids[u], text, stamp)
        for u, i, text, stamp in zip(
            ev["user"][is_comment], ev["item"][is_comment], texts, _stamps(ev["t"][is_comment]), strict=True
        )
    ]
    counts = {e: int((ev["event"] == k).sum()) for k, e in enumerate(EVENTS)}
    with atomic_dir(out, "platform") as tmp:
        _write_images(
            tmp / "images", values, item_ids.tolist(), config.image_size, seed, (S_IMAGES,), progress, workers
        )
        items_rows = ((iid, f"images/{iid}.png", t, "|".join(g)) for iid, (t, g) in zip(item_ids, titles, strict=True))
        _write_csv(tmp / "items.csv", ["item_id", "image", "title", "tags"], items_rows)
        events = (
            zip(
                user_ids[ev["user"][part]].tolist(),
                item_ids[ev["item"][part]].tolist(),
                event_names[ev["event"][part]].tolist(),
                _stamps(ev["t"][part]).tolist(),
                strict=True,
            )
            for part in _parts(len(ev["t"]))
        )
        _write_csv(tmp / "interactions.csv", ["user_id", "item_id", "event", "timestamp"], chain.from_iterable(events))
        _write_csv(tmp / "comments.csv", ["item_id", "user_id", "text", "timestamp"], comments)
        labels = (
            [iid, *v.values(), f"{pop:.6f}"] for iid, v, pop in zip(item_ids, values, items["popularity"], strict=True)
        )
        _write_csv(tmp / "labels.csv", ["item_id", *ATTR_VALUES, "popularity"], labels)
        (tmp / "README.md").write_text(_readme(config, seed, counts), encoding="utf-8")
        n_bytes = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    return {
        "out": str(out),
        "seed": seed,
        "n_users": config.n_users,
        "n_items": config.n_items,
        "n_bots": int(users.is_bot.sum()),
        "image_size": config.image_size,
        "days": DAYS,
        "files": {
            "images": config.n_items,
            "items.csv": config.n_items,
            "interactions.csv": len(ev["t"]),
            "comments.csv": len(comments),
            "labels.csv": config.n_items,
        },
        "events": counts,
        "bytes": n_bytes,
    }


def taste_lift(out: Path, attr: str, event: str = "like") -> float:
    """How strongly ``event`` follows hidden attribute ``attr``: a user's favourite value is taken from half
    of their events, and its hit rate on the other half is divided by chance (1 = no signal)."""
    with open(out / "labels.csv", newline="", encoding="utf-8") as fh:
        labels = {r["item_id"]: r[attr] for r in csv.DictReader(fh)}
    values: dict[str, list[str]] = defaultdict(list)
    with open(out / "interactions.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if r["event"] == event:
                values[r["user_id"]].append(labels[r["item_id"]])
    base = Counter(v for vals in values.values() for v in vals)
    total = sum(base.values())
    hits = expected = 0.0
    for vals in values.values():
        if len(vals) < 6:
            continue
        top = Counter(vals[::2]).most_common(1)[0][0]
        held = vals[1::2]
        hits += sum(v == top for v in held)
        expected += len(held) * base[top] / total
    return hits / expected if expected else float("nan")


def simulate_collection(
    out: Path, n: int, size: int = 96, seed: int = 0, prefix: str = "h", workers: int = 0
) -> dict[str, Any]:
    """Write a labelled image collection drawn from the platform's attribute space but disjoint from it —
    ``out/images/<prefix>NNNNN.png`` and ``out/labels.csv`` (image, palette, texture, composition, object) —
    atomically. Why: transfer evaluation needs images the model never trained on, with known labels; its own
    random stream (and id prefix) means no image repeats one of the platform's, whatever the seed."""
    out = Path(out)
    if n < 1:
        raise UserError("n", f"must be >= 1 (got {n})")
    claim_dir(out, "collection")
    items = sample_items(n, _rng(seed, S_COLLECTION))
    values = [{a: ATTR_VALUES[a][int(items[a][k])] for a in ATTR_VALUES} for k in range(n)]
    ids = _ids(prefix, n, 5).tolist()
    with atomic_dir(out, "collection") as tmp:
        _write_images(tmp / "images", values, ids, size, seed, (S_COLLECTION, 1), workers=workers)
        rows = ([f"images/{i}.png", *v.values()] for i, v in zip(ids, values, strict=True))
        _write_csv(tmp / "labels.csv", ["image", *ATTR_VALUES], rows)
    return {"out": str(out), "images": n, "image_size": size, "seed": seed}
