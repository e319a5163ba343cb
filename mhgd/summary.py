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


def _counterpart(run: RunDir, record: RunRecord) -> RunDir | None:
    """A finished sibling run of the same student, seed and training images, with a teacher if
    this one has none and alone if this one has one (``method.heads=0`` beside an MHGD run)."""
    mine = (record.model, record.dataset, record.seed, record.extra.get("train_subset"))
    for other in find_runs(run.path.parent):
        if other.path == run.path or not other.is_finished():
            continue
        them = other.read_record()
        theirs = (them.model, them.dataset, them.seed, them.extra.get("train_subset"))
        if (them.stage, them.role) != ("student", "main") or theirs != mine:
            continue
        if (them.teacher is None) != (record.teacher is None):
            return other
    return None


def _comparison(run: RunDir, record: RunRecord, result: RunResult) -> list[str]:
    """The distilled student against the student alone, when both runs are there."""
    other = _counterpart(run, record)
    if other is None:
        hint = "method.heads=0" if record.teacher is not None else "method=mhgd method.heads=8"
        probe = f" probe_mhan={run.path}" if "mhan" in record.artifacts else ""
        return [
            "To see what the teacher adds, train the other student on the same images (same "
            f"seed): add {hint}{probe} to the same command."
        ]
    other_result = other.read_result()
    if other_result is None or other_result.last_score is None or result.last_score is None:
        return []
    distilled, alone = (run, other) if record.teacher is not None else (other, run)
    scores = {run.path: result.last_score, other.path: other_result.last_score}
    effect = scores[distilled.path] - scores[alone.path]
    lines = [
        f"The same student alone (same seed, same images) reached {scores[alone.path]:.2f}%: "
        f"learning from the teacher changed its accuracy by {effect:+.2f} points (one seed; "
        "the README's ablation has five)."
    ]
    kl_distilled, kl_alone = _graph_kl(distilled), _graph_kl(alone)
    if kl_distilled is not None and kl_alone is not None and kl_alone[1] > 0:
        lines.append(
            f"Its graphs ended {kl_distilled[1] / kl_alone[1]:.2f}x as far from the teacher's as "
            f"the student alone's (graph KL {kl_distilled[1]:.3g} against {kl_alone[1]:.3g})."
        )
    return lines


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
    kl = _graph_kl(run)
    transfer = (
        [
            f"Graph KL between the student's and the teacher's attention graphs on held-out "
            f"images: {kl[0]:.3g} after the first epoch, {kl[1]:.3g} at the end (0 = the student "
            "relates images exactly as the teacher does)."
        ]
        if kl is not None
        else []
    )
    if record.teacher is None or "teacher" not in record.artifacts:
        where = _where_trained(record)
        return [
            f"Student {record.model} alone, trained on {where}: {student} test accuracy.",
            *transfer,
            *_comparison(run, record, result),
        ]
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
    return [*lines, *transfer, *_comparison(run, record, result)]


def final_message(stage: str, result: RunResult, run_dir: str | Path) -> str:
    """The end-of-run message of mhgd-train."""
    head = (
        f"{stage} {result.status}: last top-1 {result.last_score:.2f}%, best "
        f"{result.best_score:.2f}% (epoch {result.best_epoch}/{result.epochs}); "
        f"run record in {run_dir}"
    )
    return "\n".join([head, *student_summary(run_dir)])
