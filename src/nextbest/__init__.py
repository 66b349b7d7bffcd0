"""nextbest: real-time behavioral targeting and next-best-action engine for banks."""

__version__ = "0.1.0"
__all__ = ["__version__"]
