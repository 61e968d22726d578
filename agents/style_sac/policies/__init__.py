"""Actor-builder policies for :class:`agents.style_sac.StyleSAC`.

An actor-builder policy splits SAC's actor in two (SAEC: stochastic actor-executor-critic):

- the **actor** maps the state (moving image + style image) to a Gaussian over a *spatial latent*;
- the **builder** turns a latent sample into the next image, which is the action the environment receives.

"Builder" is our one name for that network: SAEC calls it the *executor*, RL-NST the *stylizer* (its released
weights: ``decoder.ckpt``).

The replay buffer stores the latent (the agent's real action); the critics judge ``(moving image, latent)``
(optionally with the style image: ``critic_style=True``). Log-probabilities use one convention throughout:
the **mean** over latent elements, paired with a per-element target entropy (StyleSAC's ``target_entropy``),
so the temperature is independent of the image size (docs/deviations.md).

- :class:`ActorBuilderPolicy`: what every actor-builder policy shares (optimizers, critics, the latent
  space, acting); a subclass supplies its networks, :meth:`~ActorBuilderPolicy.sample`,
  :meth:`~ActorBuilderPolicy.build` and :meth:`~ActorBuilderPolicy.generative_loss`.
- :class:`MiniStylerPolicy`: RLMiniStyler (Hu et al., IJCAI 2025), any style, 3D latent ``64 x H/4 x W/4``.
- :class:`RLNSTPolicy`: RL-NST (Feng et al., 2023), one style per model, 2D latent ``1 x H/4 x W/4``.
- :class:`RLNSTVideoPolicy`: RL-NST's video model, with step-wise and frame-wise ConvGRUs (``NSTVideo-v0``).

Modules: :mod:`~agents.style_sac.policies.base` (the latent sample, the Gaussian sample, the uncertainty-weighted
sum, :class:`ActorBuilderPolicy`), :mod:`~agents.style_sac.policies.ministyler` (:class:`MiniStylerPolicy` and its
contrastive loss), :mod:`~agents.style_sac.policies.rlnst` (:class:`RLNSTPolicy`) and
:mod:`~agents.style_sac.policies.video` (:class:`VideoContext`, :class:`VideoHiddenStates`,
:class:`RLNSTVideoPolicy`). Every public name is re-exported here: saved models name their policy class
``agents.style_sac.policies.<Name>``, so they load across this split.
"""

from agents.style_sac.policies.base import (
    ActorBuilderPolicy,
    LatentSample,
    ReferenceFeatures,
    gaussian_sample,
    uncertainty_weighted_sum,
)
from agents.style_sac.policies.ministyler import (
    MINISTYLER_CONTENT_LAYER,
    MINISTYLER_STYLE_LAYERS,
    MiniStylerPolicy,
    style_contrastive_loss,
)
from agents.style_sac.policies.rlnst import RLNSTPolicy
from agents.style_sac.policies.video import RLNSTVideoPolicy, VideoContext, VideoHiddenStates

__all__ = [
    "MINISTYLER_CONTENT_LAYER",
    "MINISTYLER_STYLE_LAYERS",
    "ActorBuilderPolicy",
    "LatentSample",
    "MiniStylerPolicy",
    "RLNSTPolicy",
    "RLNSTVideoPolicy",
    "ReferenceFeatures",
    "VideoContext",
    "VideoHiddenStates",
    "gaussian_sample",
    "style_contrastive_loss",
    "uncertainty_weighted_sum",
]
