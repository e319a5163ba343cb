"""mhgd-train: train what a Hydra config asks for (a teacher, or a student and what it needs).

mhgd-train experiment=quickstart
mhgd-train -m experiment=table4/vgg_heads      # the whole Table 4 grid (its sweeper params)
mhgd-train debug=tiny experiment=quickstart    # a seconds-long run of the same pipeline

Bad input ends with one line on stderr and exit status 2, before anything trains: every job of
a multirun is composed and checked before the first is launched. Importing this module is
cheap (no torch) so ``--help`` and tab completion are quick; torch loads when a job starts.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

import mhgd.config.spine  # noqa: F401  (registers the run-folder resolver train.yaml uses)
from mhgd.config import ConfigError, plain_config
from mhgd.secrets import mask_text, redact

log = logging.getLogger("mhgd.train")

# Launchers that run each job under submitit, whose own handlers requeue a preempted job: there
# the Preempted exception must reach the launcher instead of ending the process here.
SUBMITIT_LAUNCHERS = ("submitit", "mhgd_launcher")


def fail(message: str, status: int = 2) -> NoReturn:
    print(f"mhgd-train: {message}", file=sys.stderr)
    sys.exit(status)


def _under_submitit() -> bool:
    target = str(HydraConfig.get().launcher.get("_target_", ""))
    return any(name in target for name in SUBMITIT_LAUNCHERS)


def _newest_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint the interrupted stage just wrote: the newest of this job's stages."""
    from mhgd.stages import CHECKPOINT_FILE, prerequisites

    folders = [run_dir, *run_dir.glob("*/")]
    if cfg.stage == "student":
        folders += [spec.run_dir for spec in prerequisites(cfg)]
    found = [path for d in folders if (path := Path(d) / CHECKPOINT_FILE).is_file()]
    return max(found, key=lambda path: path.stat().st_mtime, default=None)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from mhgd.cluster.jobs import slurm_job_record
    from mhgd.engine.checkpoint import CheckpointError
    from mhgd.engine.preemption import Preempted
    from mhgd.pipeline import run

    run_dir = HydraConfig.get().runtime.output_dir
    try:
        result = run(cfg, run_dir, extra_record=slurm_job_record())
    except ConfigError as exc:
        fail(f"configuration error: {exc}")
    except CheckpointError as exc:  # a run's own checkpoint, damaged: the message says what to do
        fail(" ".join(str(exc).split()))
    except Preempted as exc:
        if _under_submitit():
            raise
        checkpoint = _newest_checkpoint(cfg, Path(run_dir))
        where = f"checkpoint {checkpoint}" if checkpoint else f"run directory {run_dir}"
        fail(
            f"stopped by {signal.Signals(exc.signum).name}; resume from {where} by running the "
            "same command again",
            128 + exc.signum,
        )
    from mhgd.summary import final_message

    print(final_message(cfg.stage, result, run_dir))
    return result.last_score


def _job_overrides(config: DictConfig) -> list[list[str]]:
    """Every job's overrides of a multirun, as the sweeper will launch them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(config.hydra.overrides.task)  # after the params: the command line wins
    loader = (
        GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    )
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def check_multirun(config: DictConfig) -> int:
    """Compose and validate every job of a multirun; the first bad one is a ConfigError."""
    from hydra.core.global_hydra import GlobalHydra

    from mhgd.pipeline import validate

    loader = GlobalHydra.instance().config_loader()
    jobs = _job_overrides(config)
    seen: set[str] = set()
    for number, overrides in enumerate(jobs):
        try:
            job = loader.load_sweep_config(config, list(overrides))
            tree = plain_config(job)
            key = json.dumps({k: v for k, v in tree.items() if k != "seed"}, sort_keys=True)
            if key not in seen:  # the seeds of one setting share every check
                seen.add(key)
                validate(job)
        except Exception as exc:  # ConfigError, or Hydra's own: an unknown option or key, ...
            message = str(exc) if isinstance(exc, ConfigError) else " ".join(str(exc).split())
            shown = " ".join(overrides)
            raise ConfigError(mask_text(f"job {number} ({shown}): {message}")) from None
    return len(jobs)


def mask_hydra_files(output_dir: Path) -> None:
    """Rewrite the files Hydra saved for a job (``.hydra/*.yaml``) with their secrets masked."""
    for path in sorted((output_dir / ".hydra").glob("*.yaml")):
        loaded = OmegaConf.load(path)
        tree = OmegaConf.to_container(loaded, resolve=False)
        masked = redact(tree)
        if masked != tree:
            OmegaConf.save(OmegaConf.create(masked), path)


def _check_writable(folder: Path) -> None:
    """Hydra creates the output folder itself, with a traceback when it cannot: check first."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create the output folder {folder}: {exc.strerror} (set paths.outputs)")


class TrainCallbacks(Callback):
    """Hydra hooks of mhgd-train (``hydra.callbacks`` in conf/train.yaml): check every job of a
    multirun before any is launched, and keep secrets out of the files Hydra writes."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_writable(Path(str(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            count = check_multirun(config)
        except ConfigError as exc:
            fail(f"configuration error, nothing was launched: {exc}")
        _check_writable(Path(str(config.hydra.sweep.dir)))
        log.info("checked the configs of all %d jobs", count)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        mask_hydra_files(Path(config.hydra.runtime.output_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        saved = Path(str(config.hydra.sweep.dir)) / "multirun.yaml"
        if saved.is_file():
            masked = redact(OmegaConf.to_container(OmegaConf.load(saved), resolve=False))
            OmegaConf.save(OmegaConf.create(masked), saved)


if __name__ == "__main__":
    main()
