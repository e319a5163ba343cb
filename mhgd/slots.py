"""Runs addressed by identity: one identity, one run directory, one owner at a time.

Every stage run (a main teacher or student, a cached teacher or MHAN) has an identity key
(mhgd.stages). Its *slot* ``<store>/<stage>/<key>`` is where the store finds it: the run
directory itself for an artifact, a link to the run directory for a main run. Whatever folder
a command names, a run of an identity that already has a slot trains (or resumes, or is
reused) in the slot's directory; the named folder only gets ``link.json`` pointing there. So
``seed=0`` written out, a renamed experiment or ``mhgd heads=0`` against ``method=none`` never
train a second copy, and the report counts each run once.

While a run trains, its slot's lease (mhgd.files.Lease) names its owner; any other process that
wants the same identity waits for it and then reuses its result.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from mhgd.errors import ConfigError
from mhgd.files import Lease, read_json, write_json_atomic
from mhgd.records import RecordError, RunDir, RunResult
from mhgd.stages import StageSpec

log = logging.getLogger(__name__)

LINK_FILE = "link.json"


def slot_path(store: str | Path, spec: StageSpec) -> Path:
    return Path(store) / spec.stage / spec.key


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def identity_diff(old: dict[str, Any], new: dict[str, Any], limit: int = 6) -> str:
    """The settings two identities differ in, as 'key: old -> new'."""
    a, b = _flat(old), _flat(new)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k, "<unset>") != b.get(k, "<unset>"))
    shown = [f"{k}: {a.get(k, '<unset>')} -> {b.get(k, '<unset>')}" for k in keys[:limit]]
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return "; ".join(shown) + more


def check_folder(spec: StageSpec) -> None:
    """A folder that already holds (or links to) a run of another identity is never reused."""
    folder = RunDir(spec.run_dir)
    link = folder.file(LINK_FILE)
    if folder.has_record():
        try:
            record = folder.read_record()
        except RecordError as exc:
            raise ConfigError(f"cannot tell which run {spec.run_dir} holds: {exc}") from exc
        held_key, held_identity = record.artifact_key, record.identity
    elif link.is_file():
        linked = read_json(link)
        held_key, held_identity = linked["key"], linked.get("identity", {})
    else:
        return
    if held_key == spec.key:
        return
    differs = identity_diff(held_identity, spec.identity) if held_identity else "unknown"
    raise ConfigError(
        f"{spec.run_dir} already holds another run ({spec.stage} {held_key}); this command asks "
        f"for {spec.stage} {spec.key}, which differs in: {differs}. Its result would not be "
        "yours: use another output folder (another `name=`), or move that one away"
    )


def _placement(slot: Path, spec: StageSpec) -> Path:
    """Where this identity's run lives, claiming the slot for ``spec.run_dir`` if new."""
    if slot.is_symlink() and not slot.exists():
        log.warning("the run %s linked from %s is gone; starting it afresh", slot.readlink(), slot)
        slot.unlink()
    if slot.exists():
        return slot.resolve()
    if spec.role == "artifact":
        slot.mkdir(parents=True, exist_ok=True)
        return slot
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    slot.symlink_to(spec.run_dir.resolve(), target_is_directory=True)
    return spec.run_dir.resolve()


def link(spec: StageSpec, target: Path) -> None:
    """Tell a person (and a rerun) looking in the folder they named where the run is."""
    write_json_atomic(
        spec.run_dir / LINK_FILE,
        {"run_dir": str(target), "key": spec.key, "stage": spec.stage, "identity": spec.identity},
    )
    log.info("%s %s is the run in %s (same identity): using it", spec.stage, spec.key, target)


def finished_result(store: str | Path, spec: StageSpec) -> tuple[Path, RunResult] | None:
    """The finished run of this identity, if any: a rerun then costs no data loading."""
    slot = slot_path(store, spec)
    if not slot.exists():
        return None
    try:
        result = RunDir(slot).read_result()
    except RecordError:
        return None
    if result is None or result.status != "finished":
        return None
    return slot.resolve(), result


@contextmanager
def owned(store: str | Path, spec: StageSpec) -> Iterator[StageSpec]:
    """Own the identity of ``spec`` for the block, waiting for a live owner if there is one.

    Yields the spec re-placed into the identity's run directory (which may be the folder the
    command named, or the one an earlier command trained it in).
    """
    if spec.role == "main":
        check_folder(spec)
    slot = slot_path(store, spec)
    with Lease(slot).held(f"{spec.stage} {spec.key} ({spec.run_dir})", wait=True):
        target = _placement(slot, spec)
        if spec.role == "main" and target != spec.run_dir.resolve():
            link(spec, target)
        yield replace(spec, run_dir=target)
