"""mhgd-sweep: Optuna searches over MHGD's knobs, as SLURM jobs or local processes.

    mhgd-sweep sweeps/tiny_digits.yaml           # run the study; rerun the same command to resume
    mhgd-sweep sweeps/tiny_digits.yaml confirm   # the best settings x confirm seeds, test set

A plain grid (Table 4) is not a sweep: ``mhgd-train -m experiment=table4/vgg_heads``.

Watch a study with Optuna's own tools: ``optuna-dashboard <storage>`` (pip install it), or
``optuna trials --study-name <study> --storage <storage>``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from mhgd.errors import ConfigError
from mhgd.sweeps.algorithms import describe_storage
from mhgd.sweeps.arrays import run_confirm
from mhgd.sweeps.controller import Search, SweepAborted, prepare_search, run_search
from mhgd.sweeps.space import overrides_for
from mhgd.sweeps.spec import load_spec

log = logging.getLogger("mhgd.sweep")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mhgd-sweep", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("file", type=Path, help="a sweep file, e.g. sweeps/tiny_digits.yaml")
    parser.add_argument(
        "action",
        nargs="?",
        default="run",
        choices=("run", "confirm"),
        help="run (or resume) the search; confirm: rerun the best settings",
    )
    parser.add_argument("--top-k", type=int, help="how many settings confirm reruns")
    return parser


def _summary(search: Search, trials: Sequence[FrozenTrial]) -> None:
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    storage = describe_storage(search.storage)
    log.info(
        "study %s: %d complete, %d pruned, %d failed",
        search.spec.study,
        counts[TrialState.COMPLETE],
        counts[TrialState.PRUNED],
        counts[TrialState.FAIL],
    )
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        sign = 1 if search.spec.direction == "maximize" else -1
        best = max(complete, key=lambda t: sign * t.value)
        log.info(
            "best: trial %d, %s %.2f with %s",
            best.number,
            search.spec.metric,
            best.value,
            " ".join(overrides_for(best.params)),
        )
    log.info("confirm on the test set: mhgd-sweep %s confirm", search.spec.source.file)
    log.info("inspect: optuna-dashboard %s", storage)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        spec = load_spec(args.file)
        search = prepare_search(spec)
        if args.action == "confirm":
            top_k = args.top_k or spec.confirm.top_k
            return 0 if run_confirm(search, top_k) else 1
        _summary(search, run_search(search))
        return 0
    except ConfigError as exc:
        print(f"mhgd-sweep: {exc}", file=sys.stderr)
        return 2
    except SweepAborted as exc:
        print(f"mhgd-sweep: stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mhgd-sweep: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
