"""Profiles: everything known about one customer, folded from events."""

from nextbest.profile.fold import FoldConfig, fold
from nextbest.profile.identity import IdentityMap
from nextbest.profile.model import (
    FunnelStage,
    OfferHistory,
    Profile,
    RecentEvent,
    Session,
    TopicInterest,
)
from nextbest.profile.topics import TopicMatcher, TopicSpec

__all__ = [
    "FoldConfig",
    "FunnelStage",
    "IdentityMap",
    "OfferHistory",
    "Profile",
    "RecentEvent",
    "Session",
    "TopicInterest",
    "TopicMatcher",
    "TopicSpec",
    "fold",
]
