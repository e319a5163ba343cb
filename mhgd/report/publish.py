"""Log a rebuilt table and its figure to a W&B run of job type "report".

The mode follows the training runs' rule (``mhgd.tracking.resolve_mode``): online with an API
key and a reachable server, offline otherwise (``wandb sync`` uploads it later).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mhgd.report.tables import Table
from mhgd.tracking import resolve_mode


def log_report(
    table: Table,
    figure_png: Path,
    out_dir: Path,
    *,
    mode: str = "auto",
    project: str = "mhgd",
    entity: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> str | None:
    """Log ``table`` (as a W&B Table) and ``figure_png``; returns where it went (the run's URL,
    or its offline folder and the command that uploads it), None when W&B is disabled."""
    resolved = resolve_mode(mode)
    if resolved == "disabled":
        return None
    import wandb

    entries = table.entries.astype(object).where(table.entries.notna(), None)
    # W&B tables take scalars: {seed: top-1} becomes its JSON text
    entries = entries.map(lambda v: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
    run = wandb.init(
        project=project,
        entity=entity,
        dir=str(out_dir),
        job_type="report",
        name=f"report-{table.name}",
        config={"table": table.name, "setting": table.note or "paper", **dict(config or {})},
        mode=resolved,
        reinit="finish_previous",
        settings=wandb.Settings(silent=True, x_disable_stats=True, console="off"),
    )
    try:
        run.log(
            {
                f"{table.name}/entries": wandb.Table(dataframe=entries),
                f"{table.name}/figure": wandb.Image(str(figure_png), caption=table.title),
            }
        )
    finally:
        run.finish()
    if resolved == "online":
        return str(run.url)
    return f"{run.settings.sync_dir} (offline; upload with: wandb sync {run.settings.sync_dir})"
