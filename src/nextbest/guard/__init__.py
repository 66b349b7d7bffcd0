"""Who may do what: senders' rights over events and decisions (pure)."""

from nextbest.guard.senders import KeyKind, Scope, Sender, check_decider, check_senders

__all__ = ["KeyKind", "Scope", "Sender", "check_decider", "check_senders"]
