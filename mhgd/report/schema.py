"""The columns of the runs table, shared by every source so that what follows never asks where
a run came from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

# One row per run. ``student`` is the record's ``model``: the network the run trained (for a
# teacher run, the teacher itself); ``teacher`` is the network it learned from, if any.
# ``split`` is the evaluation split (``final``: the test set; ``tune``: a validation split);
# ``subset`` the training subset of the run ("10/class", "10%"; empty: the whole training set).
# ``last_graph_kl`` is the student's held-out graph KL to its teacher in the last epoch (MHGD's
# own heads, or a probe MHAN; empty when not measured); ``graph_kl_mhan`` names that MHAN (the
# key of its run directory): graph KLs compare only through the same MHAN.
# Hyper-parameter columns follow ``subset``: one per key a method's ``describe()`` returns
# (record.json ``hparams``). MHGD's ``heads``, ``mhan_epochs`` and ``beta`` are always there
# (the tables pick entries by heads); any other method's keys are added as they appear.
HPARAM_COLUMNS = ("heads", "mhan_epochs", "beta")
RUN_COLUMNS: tuple[str, ...] = (
    "cell_id",
    "stage",
    "role",
    "method",
    "teacher",
    "student",
    "dataset",
    "split",
    "subset",
    *HPARAM_COLUMNS,
    "seed",
    "status",
    "last_top1",
    "best_top1",
    "last_graph_kl",
    "graph_kl_mhan",
    "epochs_done",
    "epochs",
    "wandb_id",
    "artifact_key",
    "run_dir",
    "wandb_path",
)
BASE_COLUMNS = tuple(c for c in RUN_COLUMNS if c not in HPARAM_COLUMNS)
_DTYPES = {
    "heads": "Int64",
    "mhan_epochs": "Int64",
    "seed": "Int64",
    "epochs_done": "Int64",
    "epochs": "Int64",
    "beta": "float64",
    "last_top1": "float64",
    "best_top1": "float64",
    "last_graph_kl": "float64",
}


def hparam_columns(runs: pd.DataFrame) -> list[str]:
    """The hyper-parameter columns of a runs table (see run_frame), in table order."""
    return [c for c in runs.columns if c not in BASE_COLUMNS]


def subset_label(subset: Mapping[str, Any] | None) -> str | None:
    """A record's ``extra.train_subset`` in words: "10/class" or "25%" (None: the whole set)."""
    if not subset:
        return None
    if subset.get("per_class") is not None:
        return f"{subset['per_class']}/class"
    return f"{100 * float(subset['fraction']):g}%"


def run_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The runs table from row dicts: every column present, numeric columns typed.

    Keys of the rows beyond RUN_COLUMNS are hyper-parameter columns beyond MHGD's (e.g.
    Soft-logits' ``tau``); they go right after MHGD's, sorted.
    """
    rows = list(rows)
    extras = sorted({key for row in rows for key in row} - set(RUN_COLUMNS))
    at = RUN_COLUMNS.index(HPARAM_COLUMNS[-1]) + 1
    columns = [*RUN_COLUMNS[:at], *extras, *RUN_COLUMNS[at:]]
    frame = pd.DataFrame(rows, columns=columns)
    frame = frame.astype(_DTYPES)
    for column in (c for c in columns if c not in _DTYPES):
        # Plain objects with None for missing (pandas 3 would infer str columns with NaN).
        values = frame[column].astype(object)
        frame[column] = values.where(values.notna(), None)
    return frame
