"""Secret masking on hard cases, in every file a run writes, and kept out of job pickles."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from mhgd.config import dirname
from mhgd.secrets import REDACTED, EnvSecret, mask_text, redact
from tests.slurm_support import REPO_ROOT

PASSWORDS = ["s3cr/et", "pa ss", "p@ss", "pa:ss", "a/b c@d:e", "%40x%2F", "ü-ñ!$&'()*+;="]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:{pw}@db.example:5432/optuna",
        "mysql+pymysql://bob:{pw}@host/db?charset=utf8",
        "redis://:{pw}@cache:6379/0",
        "sqlite://optuna:{pw}@/optuna.db",
        "https://user:{pw}@example.org/path",
    ],
)
def test_any_password_in_any_url_form_is_masked(url: str, password: str) -> None:
    text = f"cannot open {url.format(pw=password)}: refused"
    masked = mask_text(text, secrets=[])
    assert password not in masked
    assert REDACTED in masked and masked.startswith("cannot open ") and "refused" in masked


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("https://host/db?user=a&password=hunter2&ssl=1", "hunter2"),
        ("https://host/api?api_key=k3y-value", "k3y-value"),
        ("seed=1,storage.password=hunter2,lr=0.1", "hunter2"),
        ("logger.api_key=abcdef123 seed=1", "abcdef123"),
        ("postgresql\\://u\\:p\\ a/s@db/x", "p\\ a/s"),  # as Hydra escapes an override
    ],
)
def test_query_parameters_and_secret_keys_are_masked(text: str, secret: str) -> None:
    assert secret not in mask_text(text, secrets=[])


def test_environment_secrets_are_masked_wherever_they_appear(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MHGD_DB_PASSWORD", "correct horse/battery")
    tree = {"paths": {"data": "/data/correct horse/battery/x"}, "list": ["correct horse/battery"]}
    assert "correct horse" not in str(redact(tree))
    assert "correct horse" not in dirname("paths.data=/data/correct horse/battery/x")


def test_run_folder_names_mask_secrets() -> None:
    name = dirname("seed=1,storage=postgresql://u:pa ss/w@rd@db/x,db.password=hunter2")
    assert "pa ss" not in name and "hunter2" not in name and "w@rd" not in name
    assert name.startswith("seed=1,")


def test_an_env_secret_pickles_as_its_variable_name_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MHGD_TEST_STORAGE", raising=False)
    secret = EnvSecret.stash("MHGD_TEST_STORAGE", "postgresql://u:hunter2@db/x")
    payload = pickle.dumps({"storage": secret})
    assert b"hunter2" not in payload
    assert pickle.loads(payload)["storage"].value() == "postgresql://u:hunter2@db/x"
    assert "hunter2" not in str(secret)


def test_nothing_a_run_writes_holds_a_secret(tmp_path: Path) -> None:
    """A command-line secret (a URL password, a secret key) and an ${oc.env:...} secret, through
    the real CLI: run folder, .hydra/, config, record, W&B offline files; all group-readable."""
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO_ROOT),
        MHGD_OUTPUTS=str(tmp_path / "outputs"),
        MHGD_STORE=str(tmp_path / "store"),
        WANDB_MODE="offline",
        MHGD_TOKEN="env-token-Zq9",
    )
    command = [
        sys.executable,
        "-m",
        "mhgd.train",
        "debug=tiny",
        "stage=teacher",
        "schedule.epochs=1",
        "schedule.milestones=[]",
        "logger.mode=offline",
        "paths.data=postgresql://u:pa ss/w@rd@db/x",  # the digits never read it
        "name=${oc.env:MHGD_TOKEN}",  # in the folder name, W&B group, tags, record
    ]
    subprocess.run(command, cwd=tmp_path, env=env, check=True, capture_output=True, umask=0o002)

    files = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["***"]  # the name's folder
    assert any(p.parent.name == ".hydra" for p in files)
    assert any(p.suffix == ".wandb" for p in files)
    for path in files:
        content = path.read_bytes()
        for secret in (b"pa ss", b"w@rd", b"env-token-Zq9"):
            assert secret not in content, f"{secret!r} in {path}"
        assert b"pa ss" not in str(path).encode()
    for name in ("config.yaml", "record.json", "result.json", "metrics.jsonl", "checkpoint.pt"):
        [path] = [p for p in files if p.name == name and p.parent.parent.name == "***"]
        assert path.stat().st_mode & 0o040, f"{path} is not readable by the group"
