"""The one cluster layer: plan what a set of runs needs, submit it once, wait for it, report.

Used by the Hydra launcher (hydra_plugins.mhgd_launcher) and by the sweeps alike:

- ``planning``: which runs are finished, which have a live job to reattach to, which missing
  artifacts (teachers, MHANs) must be built first and which runs wait for which build;
- ``executors``: a submitit executor from a launcher profile's keys;
- ``jobs``: the job base every submitted call shares (requeue-safe, truthful exit states),
  the artifact build job, and the tickets that let a rerun find a job again;
- ``submission``: submit builds and per-prerequisite arrays, wait, and report every failure
  as soon as SLURM does, in one readable list at the end.
"""
