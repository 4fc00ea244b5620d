"""The content stage and model: a new item's audience from everything it arrives with — its image, title and text,
tags, numeric columns such as a year — not from its pixels alone.

- :mod:`~socialfeat.content.sources`: the blocks (one feature matrix per source, the tags kept sparse);
- :mod:`~socialfeat.content.gram`: each block standardised, and the Gram matrices every ridge is solved from;
- :mod:`~socialfeat.content.joint`: the joint ridge (a λ per source, source dropout, fallbacks) and its search;
- :mod:`~socialfeat.content.stage`: ``socialfeat content`` — late fusion, the table, its intervals, the files;
- :mod:`~socialfeat.content.model`: the fitted model read back, for a new item (``recommend``, the explorer).
"""

from socialfeat.content.joint import DROPOUTS, JointFitter, JointMap
from socialfeat.content.model import ContentModel
from socialfeat.content.sources import (
    IMAGE_SOURCES,
    ITEM_SOURCES,
    Block,
    image_block,
    item_blocks,
    item_text,
    numeric_rows,
    numeric_stats,
    year_from_title,
)
from socialfeat.content.stage import ContentResult, content, fit_models, fuse

__all__ = [
    "DROPOUTS",
    "IMAGE_SOURCES",
    "ITEM_SOURCES",
    "Block",
    "ContentModel",
    "ContentResult",
    "JointFitter",
    "JointMap",
    "content",
    "fit_models",
    "fuse",
    "image_block",
    "item_blocks",
    "item_text",
    "numeric_rows",
    "numeric_stats",
    "year_from_title",
]
