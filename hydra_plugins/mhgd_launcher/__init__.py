"""mhgd's SLURM launcher for Hydra: submits missing teachers and MHANs before the job array.

Hydra finds it by scanning the ``hydra_plugins`` namespace package (no ``__init__.py`` one
level up), so it must stay light to import: mhgd and torch load only when a sweep launches.
"""
