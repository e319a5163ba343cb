"""The report on real run records: a tiny Table 4 grid (A = 0, 1, 2; 3 seeds) on the digits,
plus a main teacher, a student alone, a failed, a pruned and a repeated run.

Expected numbers are computed here from the result.json files with json and statistics only.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import warnings
from collections import defaultdict
from pathlib import Path

import nbclient
import nbformat
import pandas as pd
import pytest
from wandb.apis.public.runs import Run

from mhgd.errors import ConfigError
from mhgd.pipeline import run
from mhgd.records import SCHEMA, RunDir, RunRecord, RunResult
from mhgd.report import (
    aggregate,
    build_table,
    load_runs,
    rebuild_table,
    to_latex,
    to_markdown,
)
from mhgd.report.aggregate import summarise
from mhgd.report.cli import main as report_main
from mhgd.report.paired import paired_difference
from mhgd.report.paper import COMPARISON_TABLES, TABLE4_HEADS
from mhgd.report.runs import filter_runs, parse_filters
from mhgd.report.schema import RUN_COLUMNS, run_frame
from mhgd.report.wandb_source import frame_from_wandb_runs
from tests.helpers import compose_config, tiny

REPO = Path(__file__).resolve().parent.parent
HEADS, SEEDS = (0, 1, 2), (0, 1, 2)
# Two-sided 95% Student-t quantiles t(0.975, df), from a printed t table.
T975 = {1: 12.706204736174707, 2: 4.302652729749464, 3: 3.182446305284263}


class Crash(RuntimeError):
    pass


class Pruned(RuntimeError):
    run_status = "pruned"


def raise_at_first_epoch(exception: type[Exception]):
    def hook(row: dict) -> None:
        raise exception(f"stopped after epoch {row['epoch']}")

    return hook


@pytest.fixture(scope="session")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real runs (about a minute on 2 cores); returns the folder holding outputs/ and store/."""
    root = tmp_path_factory.mktemp("report")

    def train(folder: str, *overrides: str, hook=None) -> None:
        cfg = compose_config(*tiny(root, "runtime.threads=1", *overrides))
        run(cfg, root / "outputs" / folder, epoch_hook=hook)

    def mhgd(heads: int, seed: int) -> tuple[str, ...]:
        return ("method=mhgd", f"method.heads={heads}", "method.mhan.epochs=1", f"seed={seed}")

    train("teacher/seed=0", "stage=teacher")  # also becomes the students' cached teacher
    for seed in (0, 1):
        train(f"student/seed={seed}", f"seed={seed}")
    for heads in HEADS:
        for seed in SEEDS:
            train(f"heads/A={heads},seed={seed}", *mhgd(heads, seed))
    with pytest.raises(Crash):
        train("heads/A=2,seed=3", *mhgd(2, 3), hook=raise_at_first_epoch(Crash))
    with pytest.raises(Pruned):
        train("heads/A=1,seed=4", *mhgd(1, 4), hook=raise_at_first_epoch(Pruned))
    # A second run of one cell and seed: the pipeline trains an identity once, and links.
    train("heads-again/A=1,seed=0", *mhgd(1, 0))
    return root


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def expected_cells(root: Path) -> dict[str, dict]:
    """Per main cell, from the files alone: finished values per seed, and statuses."""
    cells: dict[str, dict] = defaultdict(lambda: {"last": defaultdict(list), "statuses": []})
    for folder, _, files in os.walk(root / "outputs"):
        if "record.json" not in files:
            continue
        record = read_json(Path(folder) / "record.json")
        result = read_json(Path(folder) / "result.json")
        if record["role"] != "main":
            continue
        cell = cells[record["cell_id"]]
        cell["record"] = record
        cell["statuses"].append(result["status"])
        if result["status"] == "finished":
            cell["last"][record["seed"]].append(result["last_score"])
    return cells


def cell_of(cells: pd.DataFrame, **where) -> pd.Series:
    selected = cells
    for column, value in where.items():
        selected = selected[selected[column] == value]
    assert len(selected) == 1, f"{len(selected)} cells match {where}"
    return selected.iloc[0]


# -- loading ------------------------------------------------------------------------------
@pytest.mark.slow
def test_runs_table_counts_each_run_once(grid: Path) -> None:
    runs = load_runs(grid)
    assert tuple(runs.columns) == RUN_COLUMNS
    main = runs[runs["role"] == "main"]
    # 1 teacher + 2 students alone + the grid (A = 0 is the student alone: only its seed 2 is
    # new) + failed + pruned; the repeat is a link to its run, the teacher's store link is the
    # same run, and the two MHANs (A = 1, 2) are artifacts.
    assert len(main) == 1 + 2 + (1 + 3 + 3) + 1 + 1
    assert (grid / "outputs" / "heads-again" / "A=1,seed=0" / "link.json").is_file()
    assert sorted(runs.loc[runs["role"] == "artifact", "stage"]) == ["mhan", "mhan"]
    store_link = next(p for p in (grid / "store" / "teacher").iterdir() if p.is_symlink())
    both = load_runs([grid / "outputs", store_link, grid / "store"])
    assert len(both) == len(runs)
    assert (both["stage"] == "teacher").sum() == 1
    teacher = both[both["stage"] == "teacher"].iloc[0]
    assert (teacher["role"], teacher["student"], teacher["teacher"]) == ("main", "vgg16", None)
    grid_runs = main[main["method"] == "mhgd"]
    assert set(grid_runs["heads"]) == set(HEADS) - {0}  # A = 0 is recorded as method none
    assert set(grid_runs["teacher"]) == {"vgg16"}
    assert set(main.loc[main["method"] == "none", "teacher"]) == {None}
    assert set(main["split"]) == {"final"} and set(main["dataset"]) == {"digits"}


# -- aggregation against the files --------------------------------------------------------
@pytest.mark.slow
def test_aggregation_matches_the_result_files(grid: Path) -> None:
    expected = expected_cells(grid)
    cells = aggregate(load_runs(grid)).set_index("cell_id")
    assert set(cells.index) == set(expected)
    for cell_id, want in expected.items():
        got = cells.loc[cell_id]
        per_seed = [statistics.mean(v) for _, v in sorted(want["last"].items())]
        assert got["n_seeds"] == len(per_seed)
        assert got["seeds"] == ",".join(str(s) for s in sorted(want["last"]))
        assert got["last_mean"] == pytest.approx(statistics.mean(per_seed))
        assert got["n_failed"] == want["statuses"].count("failed")
        assert got["n_pruned"] == want["statuses"].count("pruned")
        if len(per_seed) > 1:
            sd = statistics.stdev(per_seed)
            assert got["last_std"] == pytest.approx(sd)
            half = T975[len(per_seed) - 1] * sd / math.sqrt(len(per_seed))
            assert got["last_ci95"] == pytest.approx(half)
        else:
            assert math.isnan(got["last_std"]) and math.isnan(got["last_ci95"])
    assert len(cells) == 4  # teacher, student alone (which is A = 0), A = 1, 2


@pytest.mark.slow
def test_flags_name_what_is_wrong(grid: Path) -> None:
    cells = aggregate(load_runs(grid))
    a0 = cell_of(cells, method="none", stage="student")  # A = 0: the student alone
    a1 = cell_of(cells, method="mhgd", heads=1)
    a2 = cell_of(cells, method="mhgd", heads=2)
    assert a0["flags"] == "3 of 5 seeds finished"
    # seed 0 of A = 1 was asked for twice but trained once: no duplicate to flag
    assert a1["flags"] == "3 of 5 seeds finished; 1 pruned"
    assert a2["flags"] == "3 of 5 seeds finished; 1 failed"
    assert a2["n_seeds"] == 3  # the failed seed 3 is not averaged in
    complete = aggregate(load_runs(grid), expected_seeds=3)
    assert cell_of(complete, method="none", stage="student")["flags"] == ""


# -- tables -------------------------------------------------------------------------------
@pytest.mark.slow
def test_table4_from_the_digits_grid(grid: Path) -> None:
    # A = 0 is the student alone: one cell with method=none
    cells = aggregate(load_runs(grid))
    table = build_table("table4", cells, dataset="digits")
    assert "digits demo, not the paper's setting" in table.note
    entries = table.entries.set_index("column")
    assert list(entries.index) == [str(a) for a in sorted(TABLE4_HEADS)]
    for heads in HEADS:
        where = {"method": "mhgd", "heads": heads} if heads else {"method": "none"}
        cell = cell_of(cells, stage="student", **where)
        entry = entries.loc[str(heads)]
        assert entry["cell_id"] == cell["cell_id"]
        assert entry["paper"] == TABLE4_HEADS[heads]
        assert entry["diff"] == pytest.approx(cell["last_mean"] - TABLE4_HEADS[heads])
    assert entries.loc[["4", "8", "16"], "last_mean"].isna().all()
    # paired by seed with A = 0 (the student alone), from the result files
    files = {  # by A; the student alone (method none) is A = 0
        c["record"]["hparams"].get("heads", 0): c
        for c in expected_cells(grid).values()
        if c["record"]["stage"] == "student"
    }
    for heads in (1, 2):
        seeds = sorted(set(files[heads]["last"]) & set(files[0]["last"]))
        diffs = [
            statistics.mean(files[heads]["last"][s]) - statistics.mean(files[0]["last"][s])
            for s in seeds
        ]
        entry = entries.loc[str(heads)]
        assert entry["pair_n"] == len(seeds) == 3
        assert entry["diff_mean"] == pytest.approx(statistics.mean(diffs))
        assert entry["diff_sd"] == pytest.approx(statistics.stdev(diffs))
    assert pd.isna(entries.loc["0", "pair_n"])  # the baseline itself
    text = to_markdown(table)
    assert "digits demo, not the paper's setting" in text
    a1 = entries.loc["1"]
    assert f"{a1['last_mean']:.2f} ± {a1['last_std']:.2f} !" in text
    assert "| 16 | 66.70 | - |" in text
    assert r"$\pm$" in to_latex(table) and "digits demo" in to_latex(table)


@pytest.mark.slow
def test_tables_only_use_runs_of_their_setting(grid: Path) -> None:
    cells = aggregate(load_runs(grid))
    paper_setting = build_table("table4", cells)
    assert paper_setting.note is None
    assert paper_setting.entries["cell_id"].isna().all()


@pytest.mark.slow
def test_table1_columns_and_ambiguous_entries(grid: Path) -> None:
    runs = load_runs(grid)
    cells = aggregate(runs)
    table = build_table("table1", cells, dataset="digits")
    vgg = table.entries[table.entries["row"] == "VGG16 -> VGG7"]
    teacher = vgg[vgg["column"] == "TN"].iloc[0]
    assert teacher["cell_id"] == cell_of(cells, stage="teacher")["cell_id"]
    assert teacher["n_seeds"] == 1 and teacher["paper"] == 67.99
    (alone,) = vgg[vgg["column"] == "SN"].itertuples()  # MHGD with A = 0 is this cell too
    assert alone.cell_id == cell_of(cells, method="none", stage="student")["cell_id"]
    for method in ("Soft-logits", "FSP", "AB", "KD-SVD", "KD-SVDF"):
        assert vgg[vgg["column"] == method]["cell_id"].isna().all()
    mhgd = vgg[vgg["column"] == "MHGD"]
    assert sorted(mhgd["heads"]) == [1, 2]
    for heads, flags in zip(mhgd["heads"], mhgd["flags"], strict=True):
        assert f"one of 2 cells for this entry (this one: heads={heads}); pick one" in flags
    narrowed = build_table("table1", aggregate(filter_runs(runs, {"heads": 2})), dataset="digits")
    rows = narrowed.entries
    assert rows[(rows["row"] == "VGG16 -> VGG7") & (rows["column"] == "MHGD")][
        "heads"
    ].tolist() == [2]
    assert rows[rows["column"] == "SN"]["n_seeds"].dropna().tolist() == [3]  # kept: no heads
    assert "| VGG16 -> VGG7 | FSP | 61.87 | - |" in to_markdown(table)


# -- the command --------------------------------------------------------------------------
@pytest.mark.slow
def test_report_command_prints_and_writes_table4(
    grid: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["table4", str(grid), "--dataset", "digits", "--filter", "method=mhgd"]
    assert report_main([*argv, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "Table 4" in printed and "digits demo, not the paper's setting" in printed
    for suffix in ("md", "tex", "csv", "png", "pdf"):
        assert (tmp_path / f"table4.{suffix}").stat().st_size > 0
    assert (tmp_path / "table4.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "table4.pdf").read_bytes()[:4] == b"%PDF"
    csv = pd.read_csv(tmp_path / "table4.csv")
    assert csv["column"].tolist() == sorted(TABLE4_HEADS)
    assert (csv["setting"].str.contains("digits demo")).all()


@pytest.mark.slow
def test_curves_command(grid: Path, tmp_path: Path) -> None:
    cells = aggregate(load_runs(grid))
    cell = cell_of(cells, method="mhgd", heads=2)["cell_id"]
    assert report_main(["curves", cell[:6], str(grid), "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"curves-{cell}.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / f"curves-{cell}.pdf").is_file()


@pytest.mark.slow
def test_report_logs_to_wandb_offline(grid: Path, tmp_path: Path) -> None:
    argv = ["table1", str(grid), "--dataset", "digits", "--out", str(tmp_path), "--wandb-log"]
    assert report_main([*argv, "--wandb-mode", "offline"]) == 0
    offline = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and any(offline[0].glob("*.wandb"))


def test_report_command_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert report_main(["table4", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert report_main(["table1", str(tmp_path), "--teacher", "vgg16", "--out", str(tmp_path)]) == 2
    assert "only apply to table4" in capsys.readouterr().err
    assert report_main(["table4", str(tmp_path), "--filter", "colour=red"]) == 2
    assert "cannot filter on 'colour'" in capsys.readouterr().err
    assert report_main(["table4", "wandb:no-entity", "--out", str(tmp_path)]) == 2
    assert "wandb:<entity>/<project>" in capsys.readouterr().err


# -- W&B as a source ----------------------------------------------------------------------
def wandb_run(record: dict, result: dict, config: dict, last: dict, *, full: bool) -> Run:
    """A public-API Run object as the W&B server returns it for a run the tracker logged."""
    hparams = record["hparams"]
    logged = {"cell_id": record["cell_id"], "seed": record["seed"], **hparams}
    if full:
        logged.update({k: record[k] for k in ("stage", "role", "method", "dataset", "teacher")})
        logged.update(model=record["model"], artifact_key=record["artifact_key"])
        logged["hparams"] = hparams
    model = config["teacher"] if record["stage"] == "teacher" else config["student"]
    identity = {"stage": record["stage"], "dataset": config["dataset"], "model": model}
    if record["stage"] == "student":
        identity["method"] = config["method"]
    identity["schedule"] = {"epochs": result["epochs"]}
    attrs = {
        "name": f"{record['stage']}-{record['cell_id']}",
        "state": "finished" if result["status"] == "finished" else "failed",
        "group": record["cell_id"],
        "jobType": record["stage"],
        "config": json.dumps({k: {"value": v} for k, v in {**identity, "run": logged}.items()}),
        "summaryMetrics": json.dumps(
            {
                "status": result["status"],
                "last_top1": result["last_score"],
                "best_top1": result["best_score"],
                "epoch": result["epochs_done"],
                # W&B's summary keeps the last value of every logged metric
                **{k: v for k, v in last.items() if k == "eval/graph_kl"},
            }
        ),
    }
    return Run(None, "team", "mhgd", record["wandb_id"], attrs=attrs, lazy=True)


def test_wandb_runs_of_any_method_give_its_hparam_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # Run objects make a folder
    record = {
        "cell_id": "c0ffee",
        "seed": 0,
        "stage": "student",
        "role": "main",
        "method": "soft_logits",
        "dataset": "digits",
        "teacher": "vgg16",
        "model": "vgg7",
        "artifact_key": "k",
        "wandb_id": "abc",
        "hparams": {"tau": 4.0, "weight": 0.3},
    }
    result = {
        "status": "finished",
        "last_score": 90.0,
        "best_score": 91.0,
        "epochs_done": 2,
        "epochs": 2,
    }
    config = {"dataset": {"name": "digits"}, "student": {"name": "vgg7"}, "method": {}}
    runs = frame_from_wandb_runs([wandb_run(record, result, config, {}, full=True)])
    assert runs.loc[0, "tau"] == 4.0 and runs.loc[0, "weight"] == 0.3
    assert pd.isna(runs.loc[0, "heads"])


def mirrored_runs(root: Path, *, full: bool) -> list[Run]:
    import yaml

    runs = []
    for folder, _, files in os.walk(root / "outputs"):
        if "record.json" in files:
            record = read_json(Path(folder) / "record.json")
            config = yaml.safe_load((Path(folder) / "config.yaml").read_text())
            result = read_json(Path(folder) / "result.json")
            last = (RunDir(folder).read_metrics() or [{}])[-1]
            runs.append(wandb_run(record, result, config, last, full=full))
    return runs


@pytest.mark.slow
def test_wandb_runs_give_the_same_table(grid: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_DIR", str(grid / "wandb-cache"))  # Run objects make a folder
    disk = load_runs(grid / "outputs")
    remote = frame_from_wandb_runs(mirrored_runs(grid, full=True))
    assert tuple(remote.columns) == RUN_COLUMNS
    assert remote["wandb_path"].str.startswith("team/mhgd/").all()
    # W&B configs do not carry artifacts, so which MHAN measured the graph KL is disk-only
    same = [c for c in RUN_COLUMNS if c not in ("run_dir", "wandb_path", "graph_kl_mhan")]
    key = ["wandb_id"]
    left = disk[same].sort_values(key).reset_index(drop=True)
    right = remote[same].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_dtype=False)
    pd.testing.assert_frame_equal(
        aggregate(disk).drop(columns="graph_kl_mhan"),
        aggregate(remote).drop(columns="graph_kl_mhan"),
        check_dtype=False,
    )


@pytest.mark.slow
def test_wandb_runs_without_record_fields_are_read_with_a_warning(
    grid: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_DIR", str(grid / "wandb-cache"))
    with pytest.warns(UserWarning, match="teacher names are unknown"):
        remote = frame_from_wandb_runs(mirrored_runs(grid, full=False))
    assert set(remote["role"]) == {"main"} and remote["teacher"].isna().all()
    students = remote[remote["stage"] == "student"]
    assert set(students["method"]) == {"none", "mhgd"} and set(students["student"]) == {"vgg7"}
    assert set(remote.loc[remote["stage"] == "teacher", "student"]) == {"vgg16"}


# -- notebooks ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["table4.ipynb", "tables.ipynb"])
def test_notebook_runs_top_to_bottom(
    name: str, grid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MHGD_RUNS", str(grid))
    monkeypatch.setenv("MHGD_DATASET", "digits")
    monkeypatch.setenv("MHGD_REPORTS", str(tmp_path))
    notebook = nbformat.read(REPO / "analysis" / name, as_version=4)
    nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    texts = " ".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert "digits demo, not the paper's setting" in texts
    if name == "table4.ipynb":
        assert "Table 4" in texts and len(images) == 2  # the table's figure and the curves
        assert (tmp_path / "table4.csv").is_file()
    else:
        assert all(f"Table {n}" in texts for n in (1, 2, 3)) and len(images) == 3


def test_committed_notebooks_are_the_built_ones_without_outputs() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build", REPO / "analysis" / "build_notebooks.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for name, make in build.NOTEBOOKS.items():
        committed = nbformat.read(REPO / "analysis" / name, as_version=4)
        assert committed == make(), f"analysis/{name} is stale: run analysis/build_notebooks.py"
        assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code")


# -- units --------------------------------------------------------------------------------
def test_summarise_uses_sample_sd_and_student_t() -> None:
    mean, sd, half = summarise([60.0, 62.0, 61.0, 65.0])
    assert mean == 62.0
    assert sd == pytest.approx(statistics.stdev([60.0, 62.0, 61.0, 65.0]))
    assert half == pytest.approx(T975[3] * sd / 2)
    assert summarise([70.0])[0] == 70.0 and math.isnan(summarise([70.0])[1])
    assert all(math.isnan(v) for v in summarise([]))


def row(**values) -> dict:
    base = {
        "cell_id": "c",
        "stage": "student",
        "role": "main",
        "method": "mhgd",
        "student": "vgg7",
        "teacher": "vgg16",
        "dataset": "digits",
        "status": "finished",
    }
    return {**base, **values}


def test_a_seed_run_twice_counts_once_and_is_flagged() -> None:
    runs = run_frame(
        [
            row(seed=0, last_top1=50.0, best_top1=51.0, wandb_id="a"),
            row(seed=0, last_top1=54.0, best_top1=55.0, wandb_id="b"),
            row(seed=1, last_top1=60.0, best_top1=60.0, wandb_id="c"),
            row(seed=2, status="running", last_top1=10.0, wandb_id="d"),
            row(seed=3, role="artifact", last_top1=99.0, wandb_id="e"),
        ]
    )
    cell = aggregate(runs, expected_seeds=2).iloc[0]
    assert cell["n_seeds"] == 2 and cell["last_mean"] == pytest.approx((52.0 + 60.0) / 2)
    assert cell["flags"] == "1 running; seed 0 finished more than once"


def test_filters_keep_runs_without_the_setting() -> None:
    runs = run_frame(
        [
            row(heads=8, beta=1.0, wandb_id="a"),
            row(heads=2, beta=1.0, wandb_id="b"),
            row(method="none", teacher=None, wandb_id="c"),
        ]
    )
    kept = filter_runs(runs, parse_filters(["heads=8", "beta=1"]))
    assert kept["wandb_id"].tolist() == ["a", "c"]
    assert filter_runs(runs, parse_filters(["method=none"]))["wandb_id"].tolist() == ["c"]
    with pytest.raises(ConfigError, match="column=value"):
        parse_filters(["heads"])


def test_paper_numbers_are_consistent() -> None:
    """Table 4's A = 0 is Table 1's VGG student alone, and its A = 8 is Table 1's MHGD."""
    vgg = COMPARISON_TABLES["table1"].rows[0].numbers
    assert TABLE4_HEADS[0] == vgg["none"] and TABLE4_HEADS[8] == vgg["mhgd"]
    for table in COMPARISON_TABLES.values():
        for paper_row in table.rows:
            assert set(paper_row.numbers) == set(table.columns)


# -- paired statistics --------------------------------------------------------------------
def test_paired_difference_matches_a_hand_computation() -> None:
    """Diffs 2, 1, 3, 2, 3 (seed 5 is unpaired): mean 2.2, sd sqrt(0.7), t = 2.2 / (sd / √5);
    p from the closed form of Student's t with 4 degrees of freedom."""
    values = {0: 70.0, 1: 72.0, 2: 71.0, 3: 74.0, 4: 73.0}
    baseline = {0: 68.0, 1: 71.0, 2: 68.0, 3: 72.0, 4: 70.0, 5: 99.0}
    result = paired_difference(values, baseline)
    sd = math.sqrt(0.7)
    t = 2.2 / (sd / math.sqrt(5))
    s = t / math.sqrt(t * t + 4)
    p = 2 * (1 - (0.5 + 0.75 * s * (1 - s * s / 3)))
    half = 2.7764451051977934 * sd / math.sqrt(5)  # t(0.975, 4) from a printed t table
    assert result.n == 5
    assert result.mean == pytest.approx(2.2)
    assert result.sd == pytest.approx(sd)
    assert result.t == pytest.approx(t)
    assert result.p == pytest.approx(p)
    assert (result.ci_low, result.ci_high) == (
        pytest.approx(2.2 - half),
        pytest.approx(2.2 + half),
    )
    assert result.significant
    noisy = paired_difference({0: 1.0, 1: -1.0, 2: 0.5}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert not noisy.significant and noisy.ci_low < 0 < noisy.ci_high
    assert paired_difference({0: 1.0}, {1: 2.0}).n == 0


# -- reading rules: split, broken files, hyper-parameters ---------------------------------
def write_run(
    root: Path,
    folder: str,
    *,
    seed: int,
    last: float,
    cell: str = "alone",
    method: str = "none",
    teacher: str | None = None,
    split: str = "final",
    hparams: dict | None = None,
    metrics: list[dict] | None = None,
    artifacts: dict | None = None,
) -> Path:
    """A run directory written by the record writers the pipeline uses."""
    path = root / folder
    run_dir = RunDir(path)
    run_dir.write_config({"dataset": {"name": "digits", "split": split}, "seed": seed})
    record = RunRecord(
        stage="student",
        role="main",
        cell_id=cell,
        seed=seed,
        artifact_key=f"{cell}-{seed}",
        method=method,
        dataset="digits",
        model="vgg7",
        teacher=teacher,
        hparams=dict(hparams or {}),
        artifacts=dict(artifacts or {}),
        wandb_id=f"{folder}-id",
    )
    run_dir.write_record(record)
    run_dir.write_result(RunResult("finished", 2, 2, "top1", last, last, 2))
    run_dir.write_metrics(metrics or [{"epoch": 1, "score": last}, {"epoch": 2, "score": last}])
    return path


def distilled(seed: int, last: float, **extra) -> dict:
    """write_run arguments of an MHGD student (A = 2) of the VGG16 teacher."""
    base = {"cell": "mhgd2", "method": "mhgd", "teacher": "vgg16"}
    hparams = {"heads": 2, "mhan_epochs": 1, "beta": 1.0}
    artifacts = {"mhan": f"store/mhan/mhan-of-{extra.get('cell', base['cell'])}"}
    return {**base, **extra, "seed": seed, "last": last, "hparams": hparams, "artifacts": artifacts}


def test_a_tune_trial_stays_out_of_a_test_set_table(tmp_path: Path) -> None:
    for seed, value in enumerate([80.0, 82.0, 81.0]):
        write_run(tmp_path, f"alone/{seed}", seed=seed, last=value)
    write_run(tmp_path, "sweep/trial-0", seed=0, last=99.0, cell="alone-tune", split="tune")
    write_run(tmp_path, "sweep/trial-1", **distilled(0, 97.0, split="tune", cell="mhgd-tune"))
    table = rebuild_table("table1", tmp_path, dataset="digits", expected_seeds=3)
    entries = table.entries[table.entries["row"] == "VGG16 -> VGG7"].set_index("column")
    assert entries.loc["SN", "last_mean"] == pytest.approx(81.0)
    assert entries.loc["SN", "n_seeds"] == 3 and entries.loc["SN", "flags"] == ""
    assert pd.isna(entries.loc["MHGD", "last_mean"])
    assert "only tune-split runs" in entries.loc["MHGD", "flags"]
    tuned = rebuild_table("table1", tmp_path, dataset="digits", split="tune", expected_seeds=1)
    tune_entries = tuned.entries[tuned.entries["row"] == "VGG16 -> VGG7"].set_index("column")
    assert tune_entries.loc["SN", "last_mean"] == 99.0
    assert "validation numbers" in tuned.note


BROKEN = {
    "truncated record": ("record.json", lambda p: p.write_text(p.read_text()[:40])),
    "empty result": ("result.json", lambda p: p.write_text("")),
    "truncated config": ("config.yaml", lambda p: p.write_text("dataset: {name: [")),
    "newer record schema": (
        "record.json",
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "schema": SCHEMA + 1})),
    ),
    "newer result field": (
        "result.json",
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "energy_j": 3.0})),
    ),
    "truncated metrics": ("metrics.jsonl", lambda p: p.write_text('{"epoch": 1, "sco')),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_record_file_is_skipped_with_one_warning(kind: str, tmp_path: Path) -> None:
    for seed, value in enumerate([80.0, 82.0, 81.0]):
        write_run(tmp_path, f"alone/{seed}", seed=seed, last=value)
    for seed, value in enumerate([84.0, 83.0, 86.0]):
        write_run(tmp_path, f"mhgd/{seed}", **distilled(seed, value))
    broken = write_run(tmp_path, "mhgd/3", **distilled(3, 10.0)) / BROKEN[kind][0]
    BROKEN[kind][1](broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = rebuild_table("table1", tmp_path, dataset="digits", expected_seeds=3)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and str(broken) in messages[0], messages
    entries = table.entries[table.entries["row"] == "VGG16 -> VGG7"].set_index("column")
    mhgd = entries.loc["MHGD"]
    if kind == "truncated metrics":  # only the graph KL comes from metrics.jsonl
        assert mhgd["n_seeds"] == 4
    else:
        assert mhgd["n_seeds"] == 3 and mhgd["last_mean"] == pytest.approx((84 + 83 + 86) / 3)
    assert entries.loc["SN", "last_mean"] == pytest.approx(81.0)


def test_every_described_hyper_parameter_is_a_column_and_splits_cells(tmp_path: Path) -> None:
    for seed in (0, 1):
        for tau, cell in ((2.0, "kd-t2"), (4.0, "kd-t4")):
            hparams = {"tau": tau, "weight": 0.3, "ce_weight": 0.7}
            write_run(
                tmp_path,
                f"{cell}/{seed}",
                seed=seed,
                last=80.0 + tau + seed,
                cell=cell,
                method="soft_logits",
                teacher="vgg16",
                hparams=hparams,
            )
    runs = load_runs(tmp_path)
    assert {"tau", "weight", "ce_weight"} <= set(runs.columns)
    assert list(runs.columns).index("tau") < list(runs.columns).index("seed")
    cells = aggregate(runs, expected_seeds=2)
    assert sorted(cells["tau"]) == [2.0, 4.0]
    table = build_table("table1", cells, dataset="digits")
    kd = table.entries[
        (table.entries["column"] == "Soft-logits") & table.entries["cell_id"].notna()
    ]
    assert sorted(kd["last_mean"]) == [82.5, 84.5]
    assert all("one of 2 cells for this entry (this one: tau=" in f for f in kd["flags"])


def test_tables_pair_each_entry_with_the_student_alone(tmp_path: Path) -> None:
    alone, distil = [80.0, 82.0, 81.0, 79.0], [83.0, 83.5, 84.0, 80.0]
    kl = [{"epoch": 1, "score": 1.0, "eval/graph_kl": 0.5}, {"epoch": 2, "eval/graph_kl": 0.25}]
    for seed, (a, d) in enumerate(zip(alone, distil, strict=True)):
        write_run(tmp_path, f"alone/{seed}", seed=seed, last=a)
        write_run(tmp_path, f"mhgd/{seed}", **distilled(seed, d, metrics=kl))
    write_run(tmp_path, "mhgd/9", **distilled(9, 99.0))  # no partner: not paired
    table = rebuild_table("table1", tmp_path, dataset="digits", expected_seeds=4)
    vgg = table.entries[table.entries["row"] == "VGG16 -> VGG7"]
    entry = vgg.set_index("column").loc["MHGD"]
    expected = paired_difference(dict(enumerate(distil)), dict(enumerate(alone)))
    assert entry["pair_n"] == 4 and entry["diff_mean"] == pytest.approx(expected.mean)
    assert entry["diff_p"] == pytest.approx(expected.p)
    assert bool(entry["significant"]) == expected.significant
    assert entry["graph_kl_mean"] == pytest.approx(0.25)
    text = to_markdown(table)
    assert "vs SN" in text and "graph KL" in text and "| baseline |" in text
    assert "0.25 ± 0 [mhan-of-mhgd2]" in text
    assert f"{expected.mean:+.2f} [{expected.ci_low:+.2f}, {expected.ci_high:+.2f}]" in text
