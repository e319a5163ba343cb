"""What ``mhgd-train`` prints when a run ends: the result, and for a student, its teacher and what
the transfer did, in words a newcomer reads without opening a file.

Built from the run records only (``mhgd.records``), so it says what the files say, and it
imports nothing heavy: the command stays quick to exit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mhgd.records import RunDir, RunRecord, RunResult, find_runs


def _where_trained(record: RunRecord) -> str:
    subset = record.extra.get("train_subset")
    if not subset:
        return "the whole training set"
    if subset.get("per_class") is not None:
        return f"{subset['images']} training images ({subset['per_class']} per class)"
    return (
        f"{subset['images']} training images ({100 * float(subset['fraction']):g}% of each class)"
    )


def _teacher_dir(path: str) -> Path:
    """The run directory of an artifact path (a run directory or its checkpoint file)."""
    given = Path(path)
    return given if given.is_dir() else given.parent


def _graph_kl(run: RunDir) -> tuple[float, float] | None:
    """The held-out graph KL after the first and after the last epoch, if it was measured."""
    values = [row["eval/graph_kl"] for row in run.read_metrics() if "eval/graph_kl" in row]
    return (values[0], values[-1]) if values else None


def _student_alone(run: RunDir, record: RunRecord) -> RunResult | None:
    """A finished run of the same student, seed and training images without a teacher, next to
    this one (e.g. ``mhgd-train experiment=quickstart method.heads=0``)."""
    for other in find_runs(run.path.parent):
        if other.path == run.path or not other.is_finished():
            continue
        them = other.read_record()
        same = (them.stage, them.role, them.model, them.dataset, them.seed) == (
            "student",
            "main",
            record.model,
            record.dataset,
            record.seed,
        )
        if (
            same
            and them.teacher is None
            and them.extra.get("train_subset") == record.extra.get("train_subset")
        ):
            return other.read_result()
    return None


def _method(record: RunRecord) -> str:
    knobs: dict[str, Any] = record.hparams
    if record.method == "mhgd":
        return f"MHGD (A = {knobs.get('heads')} heads)"
    return record.method


def student_summary(run_dir: str | Path) -> list[str]:
    """Lines on a finished student: teacher and student accuracy, the gap, the transfer."""
    run = RunDir(run_dir)
    record, result = run.read_record(), run.read_result()
    if record.stage != "student" or result is None or result.last_score is None:
        return []
    student = f"{result.last_score:.2f}%"
    if record.teacher is None or "teacher" not in record.artifacts:
        return [f"Student {record.model} alone, trained on {_where_trained(record)}: {student}."]
    teacher_run = RunDir(_teacher_dir(record.artifacts["teacher"]))
    teacher_result = teacher_run.read_result() if teacher_run.has_record() else None
    lines = []
    if teacher_result is not None and teacher_result.last_score is not None:
        where = _where_trained(teacher_run.read_record())
        lines.append(
            f"Teacher {record.teacher}, trained on {where}: {teacher_result.last_score:.2f}% "
            "test accuracy."
        )
    lines.append(
        f"Student {record.model} with {_method(record)}, trained on {_where_trained(record)}: "
        f"{student} test accuracy."
    )
    if teacher_result is not None and teacher_result.last_score is not None:
        gap = teacher_result.last_score - result.last_score
        lines.append(
            f"The teacher is {gap:.1f} points ahead of its student: knowledge the student "
            "can take from it."
            if gap > 0
            else f"The student is {-gap:.1f} points ahead of its teacher: nothing to learn here."
        )
    if (kl := _graph_kl(run)) is not None:
        lines.append(
            f"Transfer: the graph KL between the student's and the teacher's attention graphs on "
            f"held-out images went from {kl[0]:.3g} after the first epoch to {kl[1]:.3g} at the "
            "end (0 = the student relates images exactly as the teacher does)."
        )
    if "mhan" in record.artifacts:
        lines.append(
            f"Its attention heads are cached in {record.artifacts['mhan']}; add "
            f"probe_mhan={run.path} to a run of another student of this teacher to measure "
            "its graph KL through them."
        )
    alone = _student_alone(run, record)
    if alone is not None and alone.last_score is not None:
        effect = result.last_score - alone.last_score
        lines.append(
            f"The same student alone (same seed, same images) reached {alone.last_score:.2f}%: "
            f"the teacher's knowledge changed its accuracy by {effect:+.2f} points (one seed; "
            "see the README's ablation for five)."
        )
    else:
        lines.append(
            "To see what the teacher added, train the same student alone (same seed and "
            "images): add method.heads=0 to the same command."
        )
    return lines


def final_message(stage: str, result: RunResult, run_dir: str | Path) -> str:
    """The end-of-run message of mhgd-train."""
    head = (
        f"{stage} {result.status}: last top-1 {result.last_score:.2f}%, best "
        f"{result.best_score:.2f}% (epoch {result.best_epoch}/{result.epochs}); "
        f"run record in {run_dir}"
    )
    return "\n".join([head, *student_summary(run_dir)])
