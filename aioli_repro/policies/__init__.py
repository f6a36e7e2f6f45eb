"""Data-mixing methods as policies behind one interface (see :mod:`.base`)."""

from .base import REGISTRY, MixingPolicy, Observation, Segment, StaticPolicy, StratifiedPolicy, make_config, make_policy

__all__ = ["REGISTRY", "MixingPolicy", "Observation", "Segment", "StaticPolicy", "StratifiedPolicy", "make_config",
           "make_policy"]
