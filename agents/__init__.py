"""Agents for step-wise neural style transfer: StyleSAC (a Stable-Baselines3 algorithm) and its policies.

from agents import StyleSAC
model = StyleSAC("MiniStylerPolicy", "NST-v0")
"""

import nst_env  # noqa: F401  (registers NST-v0 so algorithms can be given the env id)
from agents.style_sac import (
    ActorBuilderPolicy,
    MiniStylerPolicy,
    RLNSTPolicy,
    RLNSTVideoPolicy,
    StyleSAC,
)

__all__ = ["ActorBuilderPolicy", "MiniStylerPolicy", "RLNSTPolicy", "RLNSTVideoPolicy", "StyleSAC"]
