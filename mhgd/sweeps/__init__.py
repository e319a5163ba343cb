"""Optuna searches over MHGD's knobs, run as submitit jobs on SLURM or locally.

The console script is ``mhgd-sweep`` (mhgd/sweep.py). One job per module: ``located`` reads a
sweep file keeping YAML line numbers; ``spec`` checks it into a SearchSpec;
``space`` maps parameters to Optuna distributions and Hydra overrides; ``algorithms`` names
samplers, pruners and storages; ``configs`` composes and validates job configs; ``jobs`` talks
to submitit; ``prebuild`` builds shared teachers and MHANs before the jobs that need them;
``workers`` is what runs inside a job; ``controller`` is the ask/tell loop; ``arrays`` runs
the confirmation of a search's best settings. Plain grids are ``mhgd-train -m``.
"""
