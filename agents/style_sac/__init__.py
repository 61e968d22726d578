"""StyleSAC: SAC with an actor-builder head (one folder per algorithm, as in Stable-Baselines3)."""

from agents.style_sac.policies import MiniStylerPolicy
from agents.style_sac.style_sac import StyleSAC

__all__ = ["MiniStylerPolicy", "StyleSAC"]
