"""What the live fuzz (tests/fuzz_live.py) and a first try of the commands found, each kept as a test: a traceback
where one ``error:`` line belongs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from socialfeat.config import load_config
from socialfeat.errors import UserError
from socialfeat.live.tables import NewItem, check_time


@pytest.mark.parametrize("seconds", [5e12, 3e11, -1e12, float("nan"), float("inf")])
def test_an_epoch_time_no_date_can_hold_is_one_line(seconds: float) -> None:
    """A Parquet or JSON Lines time column of numbers beyond the years 1 to 9999 (``fromtimestamp`` raised)."""
    with pytest.raises(UserError, match=r"row 3, column 'timestamp': .* is not a time"):
        check_time(seconds, "events.parquet", "timestamp", 3)
    assert check_time(1.7e9, "events.parquet", "timestamp", 3) == "2023-11-14T22:13:20"


def test_an_image_path_with_a_nul_is_one_line(tmp_path: Path) -> None:
    """``add --items`` with a path holding NUL (``read_bytes`` raised ValueError, uncaught)."""
    from socialfeat.live.catalogue import _image_bytes

    item = NewItem("a", "img/a\x00b.png", row=2)
    with pytest.raises(UserError, match=r"items.csv: row 2: image path 'img/a\\x00b.png' holds a NUL character"):
        _image_bytes([item], tmp_path, load_config(None, []), "items.csv")


def test_logging_events_on_batch_items_only_folds_the_user_in(embedded_run: Path, tmp_path: Path) -> None:
    """A user whose live events are all on batch items: the fold-in stacked an empty list of live items' factors
    (``[np.stack([])] * False`` builds the stack first) and failed after the events were stored."""
    from socialfeat.live.catalogue import Live
    from socialfeat.live.tables import NewEvent

    run = Path(shutil.copytree(embedded_run, tmp_path / "run"))
    live = Live(load_config(None, []), run, create=True)
    user, item = str(live.rec.user_ids[0]), str(live.rec.item_ids[0])
    logged = live.log([NewEvent(user, item, "like")])
    assert (logged.events, logged.users) == (1, 1)
    assert live.user_vector(user) is not None
