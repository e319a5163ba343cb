"""Fixtures shared by all test modules."""

from tests.slurm_support import slurm_cluster

__all__ = ["slurm_cluster"]
