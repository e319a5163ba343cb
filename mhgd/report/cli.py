"""mhgd-report: the paper's tables and a cell's training curves, rebuilt from logged runs.

mhgd-report table4 outputs                         # the runs below ./outputs
mhgd-report table4 outputs --dataset digits        # the digits demo grid
mhgd-report table1 wandb:my-team/mhgd --filter heads=8
mhgd-report curves 4df1f591 outputs
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from mhgd.errors import ConfigError
from mhgd.report.aggregate import EXPECTED_SEEDS
from mhgd.report.build import (
    cell_curves,
    default_out_dir,
    rebuild_table,
    select_runs,
    write_report,
)
from mhgd.report.plots import save_figure
from mhgd.report.publish import log_report
from mhgd.report.render import to_markdown
from mhgd.report.runs import parse_filters
from mhgd.report.tables import TABLE_NAMES, TABLE_SPLIT
from mhgd.tracking import MODES

SPLITS = ("final", "tune")  # mhgd.data.SPLITS; the report does not import the data code


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('give a JSON object, e.g. \'{"group": "<cell id>"}\'')
    return value


def _sources_and_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="a runs or sweep directory (searched recursively), or wandb:<entity>/<project>",
    )
    parser.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="keep runs with this value (runs without the column, e.g. teachers for heads, "
        "are kept); repeatable, e.g. --filter beta=1.0 --filter split=final",
    )
    parser.add_argument(
        "--wandb-filters",
        type=_json_object,
        default=None,
        metavar="JSON",
        help='W&B API filters, e.g. \'{"tags": {"$in": ["table4-vgg-heads"]}}\'',
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default $MHGD_OUTPUTS/reports)"
    )


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="mhgd-report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = main.add_subparsers(dest="command", required=True)
    for name in TABLE_NAMES:
        table = commands.add_parser(name, help=f"rebuild {name} (md, tex, csv, png, pdf)")
        _sources_and_filters(table)
        table.add_argument("--dataset", help="data set of the runs (default: the paper's)")
        table.add_argument("--teacher", help="teacher model (table4; default vgg16)")
        table.add_argument("--student", help="student model (table4; default vgg7)")
        table.add_argument(
            "--seeds",
            type=int,
            default=EXPECTED_SEEDS,
            help=f"seeds a complete cell has (default {EXPECTED_SEEDS}, the paper's)",
        )
        table.add_argument(
            "--split",
            choices=SPLITS,
            default=TABLE_SPLIT,
            help="runs of which evaluation split the table reports (default final: the test "
            "set; tune: a sweep's validation numbers)",
        )
        table.add_argument(
            "--wandb-log", action="store_true", help="log the table and figure to W&B"
        )
        table.add_argument(
            "--wandb-mode",
            choices=MODES,
            default="auto",
            help="auto: online with an API key and a reachable server, else offline",
        )
        table.add_argument("--wandb-project", default="mhgd", help="W&B project of the report run")
        table.add_argument("--wandb-entity", default=None, help="W&B entity (default: yours)")
    curves = commands.add_parser("curves", help="per-epoch curves of one cell (png, pdf)")
    curves.add_argument("cell", help="a cell id, or a unique prefix of one")
    _sources_and_filters(curves)
    return main


def _table_command(args: argparse.Namespace, out: Path) -> None:
    table = rebuild_table(
        args.command,
        args.sources,
        dataset=args.dataset,
        teacher=args.teacher,
        student=args.student,
        filters=parse_filters(args.filter),
        wandb_filters=args.wandb_filters,
        expected_seeds=args.seeds,
        split=args.split,
    )
    print(to_markdown(table))
    paths, _ = write_report(table, out)
    print("wrote " + ", ".join(str(p) for p in paths))
    if args.wandb_log:
        run_id = log_report(
            table,
            next(p for p in paths if p.suffix == ".png"),
            out,
            mode=args.wandb_mode,
            project=args.wandb_project,
            entity=args.wandb_entity,
            config={"sources": [str(s) for s in args.sources], "filters": args.filter},
        )
        print(f"W&B report run: {run_id}" if run_id else "W&B disabled: nothing logged")


def _curves_command(args: argparse.Namespace, out: Path) -> None:
    runs = select_runs(args.sources, parse_filters(args.filter), args.wandb_filters)
    cell_id, figure = cell_curves(runs, args.cell)
    paths = save_figure(figure, out, f"curves-{cell_id}")
    print("wrote " + ", ".join(str(p) for p in paths))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = args.out or default_out_dir()
    try:
        if args.command == "curves":
            _curves_command(args, out)
        else:
            _table_command(args, out)
    except ConfigError as exc:
        print(f"mhgd-report: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
