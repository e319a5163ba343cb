"""Secrets: masking them in everything a run writes or prints, and keeping them out of pickles.

A secret is (1) the value under a key that names one (``password``, ``api_key``, ``token``,
...), in a config tree or in a ``key=value`` override; (2) the password of a URL, whatever
characters it holds (``/``, spaces, ``@``, ``:``) and whatever the scheme; (3) a ``password=``
or ``token=``-like URL query parameter; (4) the value of any environment variable whose name
says it is secret (``WANDB_API_KEY``, ``MHGD_DB_PASSWORD``, ...), wherever it shows up, e.g.
interpolated with ``${oc.env:...}`` under an innocent key.

Jobs are pickled (submitit) into files others may read, so a secret that a job needs travels in
the environment, never in the pickle: ``EnvSecret.stash(name, value)`` puts the value in this
process's environment (which local and SLURM jobs inherit) and pickles only the variable name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REDACTED = "***"
SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential)", re.I)
# scheme://user:PASSWORD@host: the password runs to the last '@' of the line, so '@', '/',
# ':' or spaces inside it are masked too (at worst a little more than the password is).
# Hydra escapes ':' and spaces in overrides (``postgresql\://u\:pw@h``): the '\' are allowed.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*\\?://[^:/@\s\\]*\\?:)(?P<pw>[^\n]*)@"
)
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?:[\w-]*(?:password|passwd|pwd|token|secret|api[_-]?key)[\w-]*)=)"
    r"(?P<value>[^&#\s,]*)",
    re.I,
)
# key=value items such as Hydra overrides (``a=1,db.password=x``): mask the secret keys' values.
_KEY_VALUE_SECRET = re.compile(
    r"(?P<head>(?:^|[,\s])[+~]*[\w.@/-]*(?:api[_-]?key|token|secret|password|passwd|pwd)[\w.-]*=)"
    r"(?P<value>[^,\s]*)",
    re.I,
)
MIN_ENV_SECRET = 6  # shorter values would mask ordinary words


def environment_secrets() -> list[str]:
    """Values of environment variables whose names say they are secret, longest first."""
    values = {v for k, v in os.environ.items() if SECRET_KEY.search(k) and len(v) >= MIN_ENV_SECRET}
    return sorted(values, key=len, reverse=True)


def mask_text(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with secret values, URL passwords, secret query parameters and the values of
    secret ``key=value`` items (overrides, ``override_dirname``) masked."""
    for secret in environment_secrets() if secrets is None else secrets:
        text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}@", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m['head']}{REDACTED}", text)
    return _KEY_VALUE_SECRET.sub(lambda m: f"{m['head']}{REDACTED}", text)


def redact(value: Any, secrets: list[str] | None = None) -> Any:
    """Copy of a config tree (mappings, lists, strings) with every secret masked."""
    secrets = environment_secrets() if secrets is None else secrets
    if isinstance(value, Mapping):
        return {
            k: (
                REDACTED
                if SECRET_KEY.search(str(k)) and v not in (None, "") and not isinstance(v, Mapping)
                else redact(v, secrets)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    if isinstance(value, str):
        return mask_text(value, secrets)
    return value


@dataclass(frozen=True)
class EnvSecret:
    """A secret a job needs, pickled as the name of the environment variable that holds it.

    Local and SLURM jobs inherit the submitting process's environment (``sbatch`` exports it by
    default), so ``stash`` before submitting and ``value()`` inside the job.
    """

    variable: str

    @classmethod
    def stash(cls, variable: str, value: str) -> EnvSecret:
        os.environ[variable] = value
        return cls(variable)

    def value(self) -> str:
        try:
            return os.environ[self.variable]
        except KeyError:
            raise RuntimeError(
                f"the job's environment lacks {self.variable}: submit with the environment "
                "exported (sbatch's default, --export=ALL)"
            ) from None

    def __str__(self) -> str:
        return f"${{{self.variable}}}"
