"""The catalog: offers, campaigns, segments, placements, advisors and policies, compiled from
config.

Pure: ``compile_catalog`` turns the parsed catalog into a ``Catalog``; reading the YAML in git
is the adapter's job (``nextbest.store.catalog_files.load_catalog``).
"""

from nextbest.catalog.compile import compile_catalog
from nextbest.catalog.compiled import Catalog, CompiledAdvisor, CompiledOffer, advisor_card_id
from nextbest.catalog.model import (
    AdvisorSpec,
    CallbackPolicy,
    CampaignSpec,
    CatalogSpec,
    Channel,
    ContactPolicy,
    OfferKind,
    OfferSpec,
    PlacementKind,
    PlacementSpec,
    ScoringSpec,
    SegmentSpec,
)
from nextbest.catalog.source_map import SourceMap

__all__ = [
    "AdvisorSpec",
    "CallbackPolicy",
    "CampaignSpec",
    "Catalog",
    "CatalogSpec",
    "Channel",
    "CompiledAdvisor",
    "CompiledOffer",
    "ContactPolicy",
    "OfferKind",
    "OfferSpec",
    "PlacementKind",
    "PlacementSpec",
    "ScoringSpec",
    "SegmentSpec",
    "SourceMap",
    "advisor_card_id",
    "compile_catalog",
]
