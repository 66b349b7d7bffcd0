"""Expert advisors and callbacks: who may take a hot lead, when, and the callback's life.

Pure core (no I/O; the clock is passed in as a ``Timestamp``):

    model       the vocabulary shared by the core, the stores and the faces: presence, the
                callback's modes and states, the legal transitions, a callback record
"""

__all__ = ["model"]
