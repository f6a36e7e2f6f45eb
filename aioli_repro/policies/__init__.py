"""Data-mixing methods as policies behind one interface (see :mod:`.base`).

Importing this package registers every method, so ``make_policy(name, ...)`` finds them all.
"""

from . import aioli, doge, doremi, odm, skillit  # noqa: F401  (registration side effects)
from .base import (
    REGISTRY,
    MixingPolicy,
    Observation,
    PolicyContext,
    Segment,
    StaticPolicy,
    StratifiedPolicy,
    make_config,
    make_policy,
)

__all__ = ["REGISTRY", "MixingPolicy", "Observation", "PolicyContext", "Segment", "StaticPolicy",
           "StratifiedPolicy", "make_config", "make_policy"]
