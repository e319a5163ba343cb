"""CLI start-up: ``mhgd-train --help`` and a TAB completion against a bare Hydra app's.

Every TAB press runs the program (Hydra's completion calls it with ``-sc query=bash``), so
start-up time is what a user feels. The bare app is a one-file Hydra app with one yaml and no
imports of its own: the floor any Hydra CLI pays on this machine. Runs are interleaved (bare,
mhgd, bare, mhgd, ...) so machine load hits both alike; the medians and their ratio are printed.

    python benchmarks/bench_cli_startup.py            # 7 rounds
    python benchmarks/bench_cli_startup.py --rounds 15
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE_APP = """
import hydra


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    print(cfg)


if __name__ == "__main__":
    main()
"""


def _time(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    mhgd_train = shutil.which("mhgd-train")
    if mhgd_train is None:
        sys.exit("mhgd-train is not on PATH: pip install -e . first")
    with tempfile.TemporaryDirectory() as folder:
        app = Path(folder) / "bare.py"
        app.write_text(BARE_APP)
        (Path(folder) / "config.yaml").write_text("lr: 0.1\nepochs: 10\n")
        bare = [sys.executable, str(app)]
        mhgd = [sys.executable, mhgd_train]
        cases = {
            "--help": (["--help"], "bare.py ", "mhgd-train "),
            "TAB after 'method='": (["-sc", "query=bash"], "bare.py lr=", "mhgd-train method="),
        }
        print(f"{'what':24} {'bare Hydra (s)':>15} {'mhgd-train (s)':>15} {'ratio':>7}")
        for what, (flags, bare_line, mhgd_line) in cases.items():
            times: dict[str, list[float]] = {"bare": [], "mhgd": []}
            for _ in range(args.rounds):
                for name, command, line in (("bare", bare, bare_line), ("mhgd", mhgd, mhgd_line)):
                    env = dict(os.environ, COMP_LINE=line, COMP_POINT=str(len(line)))
                    times[name].append(_time([*command, *flags], env))
            b, m = statistics.median(times["bare"]), statistics.median(times["mhgd"])
            print(f"{what:24} {b:15.2f} {m:15.2f} {m / b:7.1f}")


if __name__ == "__main__":
    main()
