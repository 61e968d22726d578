"""StyleSAC: SAC with an actor-builder head (one folder per algorithm, as in Stable-Baselines3)."""

from agents.style_sac.policies import (
    ActorBuilderPolicy,
    MiniStylerPolicy,
    RLNSTPolicy,
    RLNSTVideoPolicy,
)
from agents.style_sac.style_sac import StyleSAC

__all__ = ["ActorBuilderPolicy", "MiniStylerPolicy", "RLNSTPolicy", "RLNSTVideoPolicy", "StyleSAC"]
