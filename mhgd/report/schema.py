"""The columns of the runs table, shared by every source so that what follows never asks where
a run came from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

# One row per run. ``student`` is the record's ``model``: the network the run trained (for a
# teacher run, the teacher itself); ``teacher`` is the network it learned from, if any.
# ``heads``, ``mhan_epochs`` and ``beta`` are MHGD's hyper-parameters (empty for other methods);
# ``split`` is the evaluation split (``final``: the test set; ``tune``: a validation split).
RUN_COLUMNS: tuple[str, ...] = (
    "cell_id",
    "stage",
    "role",
    "method",
    "teacher",
    "student",
    "dataset",
    "split",
    "heads",
    "mhan_epochs",
    "beta",
    "seed",
    "status",
    "last_top1",
    "best_top1",
    "epochs_done",
    "epochs",
    "wandb_id",
    "artifact_key",
    "run_dir",
    "wandb_path",
)
HPARAM_COLUMNS = ("heads", "mhan_epochs", "beta")
_DTYPES = {
    "heads": "Int64",
    "mhan_epochs": "Int64",
    "seed": "Int64",
    "epochs_done": "Int64",
    "epochs": "Int64",
    "beta": "float64",
    "last_top1": "float64",
    "best_top1": "float64",
}


def run_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The runs table from row dicts: every column present, numeric columns typed."""
    frame = pd.DataFrame(list(rows), columns=list(RUN_COLUMNS))
    frame = frame.astype(_DTYPES)
    for column in (c for c in RUN_COLUMNS if c not in _DTYPES):
        # Plain objects with None for missing (pandas 3 would infer str columns with NaN).
        values = frame[column].astype(object)
        frame[column] = values.where(values.notna(), None)
    return frame
