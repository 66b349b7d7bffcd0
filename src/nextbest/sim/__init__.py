"""The synthetic bank: a seeded population with hidden needs and a hidden response model.

It drives nextbest like a real site (demo data, load generator, decision-quality bench).
The engine never imports this package and never reads its hidden parameters.
"""

__all__ = []
