"""What a user watching a run sees (issue 13 item 6): a progress bar with a total, an ETA and
the running losses, and an epoch line with the train losses and the learning rate."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import pytest

from mhgd.engine import loop
from mhgd.engine.loop import LoopSettings, fit
from mhgd.engine.optim import StageSchedule
from tests.test_host_sync import SETUPS, images_and_labels


def train(tmp_path: Path, train_batches, epochs: int = 2) -> None:
    fit(
        SETUPS["mhgd"](),
        schedule=StageSchedule(epochs=epochs, lr=0.01),
        train_batches=train_batches,
        eval_batches=lambda: [images_and_labels(4, 99)],
        checkpoint=tmp_path / "checkpoint.pt",
        settings=LoopSettings(progress=True),
    )


def test_the_bar_has_a_total_an_eta_and_the_running_losses(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(loop, "POSTFIX_INTERVAL_S", 0.0)  # show the losses after every step
    data = [images_and_labels(8, seed) for seed in range(3)]
    train(tmp_path, lambda epoch: data, epochs=1)
    bar = capsys.readouterr().err
    assert "epoch 1/1" in bar and "3/3 [" in bar  # the total
    assert "<" in bar.split("3/3 [")[-1]  # elapsed<remaining: the ETA
    assert "ce " in bar and "transfer " in bar  # the running losses


def test_a_generator_gets_its_total_from_the_epoch_before(tmp_path, capsys):
    data = [images_and_labels(8, seed) for seed in range(3)]
    train(tmp_path, lambda epoch: (batch for batch in data))  # no length to ask
    bar = capsys.readouterr().err
    first, second = bar.split("epoch 2/2", 1)
    assert "/3 [" not in first and "3/3 [" in second


def test_the_epoch_line_shows_train_losses_and_lr(tmp_path, caplog):
    data = [images_and_labels(8, seed) for seed in range(2)]
    with caplog.at_level(logging.INFO, logger="mhgd.engine.loop"):
        train(tmp_path, lambda epoch: data, epochs=1)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1/1")]
    assert "train: ce " in line and " transfer " in line and " top1 " in line
    assert "lr 0.01" in line
    assert "grad_norm" not in line  # the method's other statistics stay in the metrics


@pytest.fixture(autouse=True)
def _no_terminal_width_surprises(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    # Redraw on every step: tiny steps end within tqdm's default 0.1 s between redraws.
    monkeypatch.setattr(loop, "tqdm", functools.partial(loop.tqdm, mininterval=0, miniters=1))
