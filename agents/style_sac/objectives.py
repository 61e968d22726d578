"""SAC's soft Bellman target and temperature objective as pure functions (what :meth:`StyleSAC.train
<agents.style_sac.StyleSAC.train>` computes in its phases 1 and 4; checked by hand in tests/test_training.py)."""

from __future__ import annotations

import torch


def soft_bellman_target(
    rewards: torch.Tensor,
    dones: torch.Tensor,
    next_q: torch.Tensor,
    next_log_prob: torch.Tensor,
    alpha: torch.Tensor | float,
    gamma: float,
) -> torch.Tensor:
    """SAC's soft Bellman target ``r + gamma * (1 - done) * (min_j Q'_j(s', a') - alpha * log pi(a'|s'))``.

    ``done`` is 1 only where the episode *terminated*: SB3's replay buffers store 0 for a time-limit
    truncation (``handle_timeout_termination``), so a truncated episode still bootstraps. ``NST-v0`` never
    terminates.

    :param rewards: ``N`` rewards.
    :param dones: ``N`` termination flags (0 or 1).
    :param next_q: ``N`` values of the minimum over the target critics at ``(s', a')``.
    :param next_log_prob: ``N`` log-probabilities of ``a' ~ pi(.|s')`` (means per latent element).
    :param alpha: the temperature.
    :param gamma: the discount factor.
    """
    return rewards + (1.0 - dones) * gamma * (next_q - alpha * next_log_prob)


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """SAC's temperature objective ``-log_alpha * (log pi(a|s) + target_entropy)``, averaged over the batch:
    its gradient raises ``alpha`` while the entropy ``-log pi`` is below the target and lowers it above.

    :param log_alpha: the learned log-temperature (a 1-element tensor).
    :param log_prob: ``N`` log-probabilities of fresh samples (means per latent element; not differentiated).
    :param target_entropy: the target entropy per latent element.
    """
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()
