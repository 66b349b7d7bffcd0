"""Experiments: deterministic arm assignment and, later, counters and statistics."""

from nextbest.experiments.assignment import Arm, assign, bucket

__all__ = ["Arm", "assign", "bucket"]
