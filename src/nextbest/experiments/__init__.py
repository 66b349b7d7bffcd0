"""Experiments: deterministic arm assignment, and statistics on per-arm counts.

``nextbest.experiments.statistics`` (counts, tests, SRM, CUPED, sequential) is imported on
its own, ``from nextbest.experiments import statistics``: it loads scipy, which the decision
path does not need.
"""

from nextbest.experiments.assignment import Arm, assign, bucket

__all__ = ["Arm", "assign", "bucket"]
