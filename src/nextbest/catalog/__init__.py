"""The catalog: offers, campaigns, segments, placements and policies, compiled from config.

Pure: ``compile_catalog`` turns the parsed catalog into a ``Catalog``; reading the YAML in git
is the adapter's job (``nextbest.store.catalog_files.load_catalog``).
"""

from nextbest.catalog.compile import compile_catalog
from nextbest.catalog.compiled import Catalog, CompiledOffer
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
from nextbest.catalog.source_map import SourceMap

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
    "SourceMap",
    "compile_catalog",
]
