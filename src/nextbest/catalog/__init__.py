"""The catalog: offers, campaigns, segments, placements and policies as YAML in git."""

from nextbest.catalog.load import Catalog, CompiledOffer, check_catalog, load_catalog
from nextbest.catalog.model import (
    CampaignSpec,
    CatalogSpec,
    Channel,
    ContactPolicy,
    OfferKind,
    OfferSpec,
    PlacementSpec,
    ScoringSpec,
    SegmentSpec,
)

__all__ = [
    "CampaignSpec",
    "Catalog",
    "CatalogSpec",
    "Channel",
    "CompiledOffer",
    "ContactPolicy",
    "OfferKind",
    "OfferSpec",
    "PlacementSpec",
    "ScoringSpec",
    "SegmentSpec",
    "check_catalog",
    "load_catalog",
]
