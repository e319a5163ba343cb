"""Hydra configs of mhgd-train (a package so Hydra finds them from the console script)."""
