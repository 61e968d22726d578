"""Data-parallel StyleSAC over several processes: ``torchrun ... -m agents.train_sac --distributed``.

Every rank runs its own env(s) and replay buffer with its own seed (:meth:`ProcessGroup.seed`) and makes the same
updates: after each backward pass :class:`GradientAverager` (``StyleSAC.gradient_hook``) averages the gradients
of that optimizer's parameters across the ranks, so every rank applies the same step to the same weights, which
rank 0 hands to the others at the start (:func:`model_state`, :func:`load_model_state`: weights, optimizer
states, temperature and counters). A rank that ends or stops answering makes every collective fail within
``--dist-timeout`` seconds, which ends the other ranks with a one-line error (:meth:`ProcessGroup.collective`).

- :func:`process_group`: join torchrun's process group (``env://``; NCCL on CUDA, gloo on the CPU);
- :class:`ProcessGroup`: the rank, its device and seed, and the collectives the training run needs;
- :class:`GradientAverager`: the gradient all-reduce, with its count, bytes and (optionally) time;
- :func:`replicate`: rank 0's model on every rank, its gradients averaged from then on.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.save_util import recursive_getattr

from agents.errors import DistributedError, one_line
from agents.style_sac import StyleSAC
from nst_env.utils import resolve_device

T = TypeVar("T")

#: The environment variables torchrun sets for each worker (``env://`` initialisation reads them).
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: Counters of a model that every rank must share for the ranks to make the same updates.
COUNTERS = ("num_timesteps", "_n_updates")


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the distributed run, and the collectives the run needs.

    :param rank: the global rank (0: the one that logs, checkpoints, evaluates and writes the run folder).
    :param world_size: the number of ranks.
    :param local_rank: the rank on this machine (it picks the GPU).
    :param device: the rank's device.
    :param timeout_s: how long a collective waits for the other ranks before failing.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    timeout_s: float

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0

    def seed(self, base: int, n_envs: int) -> int:
        """This rank's seed, ``base + rank * n_envs``: its envs (seeded ``seed + i`` by SB3's ``make_vec_env``)
        get seeds no other rank's env has, and its networks' sampling noise differs from the other ranks'.

        :param base: the run's seed (``--seed``; rank 0's).
        :param n_envs: envs per rank.
        """
        return base + self.rank * n_envs

    def collective(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call a ``torch.distributed`` collective; its failure (a rank ended, or did not answer within the
        timeout) ends this rank with a one-line error instead of a traceback.

        :param function: the collective, e.g. ``torch.distributed.all_reduce``.
        :param args: its positional arguments.
        :param kwargs: its keyword arguments.
        :raises DistributedError: the collective failed.
        """
        try:
            return function(*args, **kwargs)
        except RuntimeError as exc:  # torch.distributed.DistError and the backends' own errors
            raise DistributedError(
                f"distributed training stopped on rank {self.rank} of {self.world_size}: another rank ended or did "
                f"not answer within --dist-timeout {self.timeout_s:g} s ({one_line(exc)[:300]})."
            ) from exc

    def broadcast(self, value: Any = None) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank; the other ranks' ``value`` is ignored. A
        rank-0 error sent by :meth:`setup_on_main` ends the other ranks with it.

        :param value: what rank 0 sends.
        :raises DistributedError: on the other ranks, when rank 0 failed to set the run up.
        """
        payload = [("ok", value)]
        self.collective(dist.broadcast_object_list, payload, src=0)
        status, received = payload[0]
        if status == "error":
            raise DistributedError(f"rank 0 could not set the run up: {received}")
        return received

    @contextmanager
    def setup_on_main(self) -> Iterator[None]:
        """Rank 0's set-up before its :meth:`broadcast`: an exception in the block is sent to the other ranks
        (which are waiting in :meth:`broadcast`, and then end with it) before it propagates."""
        try:
            yield
        except BaseException as exc:
            if self.is_main:
                self.collective(dist.broadcast_object_list, [("error", one_line(exc))], src=0)
            raise

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (every rank must call it at the same point).

        :param flag: this rank's flag.
        """
        tensor = torch.tensor([float(flag)], device=self.device)
        self.collective(dist.all_reduce, tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())


def rank_device(device: str, local_rank: int) -> torch.device:
    """The device of the rank ``local_rank`` on its machine: ``auto`` and ``cuda`` become ``cuda:<local_rank>``
    (one GPU per rank) when CUDA is used; an explicit index (``cuda:1``) or the CPU stays as given.

    :param device: the ``--device`` argument.
    :param local_rank: the rank on this machine.
    """
    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        return torch.device("cuda", local_rank)
    return resolved


@contextmanager
def process_group(device: str, timeout_s: float) -> Iterator[ProcessGroup]:
    """Join the process group torchrun set up (``env://``), with the backend for the rank's device: NCCL on
    CUDA, gloo on the CPU; leave it at the end.

    :param device: the ``--device`` argument (see :func:`rank_device`).
    :param timeout_s: how long joining and each collective wait for the other ranks (``--dist-timeout``).
    :raises DistributedError: not started by torchrun, or the other ranks did not join in time.
    """
    missing = [name for name in LAUNCH_VARIABLES if name not in os.environ]
    if missing:
        raise DistributedError(
            f"--distributed runs under torchrun (torchrun --nproc_per_node N -m agents.train_sac --distributed ...), "
            f"which sets {', '.join(LAUNCH_VARIABLES)}; missing: {', '.join(missing)}."
        )
    rank, world_size, local_rank = (int(os.environ[name]) for name in LAUNCH_VARIABLES[:3])
    group = ProcessGroup(rank, world_size, local_rank, rank_device(device, local_rank), timeout_s)
    if group.device.type == "cuda":
        torch.cuda.set_device(group.device)
    try:
        dist.init_process_group(
            "nccl" if group.device.type == "cuda" else "gloo",
            init_method="env://",
            timeout=dt.timedelta(seconds=timeout_s),
        )
    except RuntimeError as exc:
        raise DistributedError(
            f"--distributed: rank {rank} could not join the other {world_size - 1} ranks within --dist-timeout "
            f"{timeout_s:g} s ({one_line(exc)[:300]})."
        ) from exc
    try:
        yield group
    finally:
        dist.destroy_process_group()


class GradientAverager:
    """Average the gradients of an optimizer's parameters across the ranks: ``StyleSAC.gradient_hook``, called
    after the backward pass and before the optimizer's step.

    The gradients are flattened into one bucket, all-reduced (summed) once and divided by the number of ranks.
    With a gradient scaler the gradients are still scaled here, by the same scale on every rank (the scalers
    start alike and see the same averaged gradients, infinities included), so the scaler's unscaling and
    skipping of steps stay correct. Parameters without a gradient are left out; they are the same on every rank,
    whose losses have the same graph.

    :param group: the process group.
    :param timed: time each all-reduce (synchronising a CUDA device before and after it) into :attr:`seconds`.
    """

    def __init__(self, group: ProcessGroup, timed: bool = False) -> None:
        self.group = group
        self.timed = timed
        self.calls = 0  #: all-reduces made
        self.bytes = 0  #: bytes all-reduced
        self.seconds = 0.0  #: time in the all-reduces (only when ``timed``)

    def __call__(self, optimizer: torch.optim.Optimizer) -> None:
        """Average the gradients of ``optimizer``'s parameters in place.

        :param optimizer: the optimizer about to step.
        """
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        bucket = torch.cat([grad.reshape(-1) for grad in grads])
        start = self._clock()
        self.group.collective(dist.all_reduce, bucket)
        self.seconds += self._clock() - start
        bucket /= self.group.world_size
        offset = 0
        for grad in grads:
            grad.copy_(bucket[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()
        self.calls += 1
        self.bytes += bucket.numel() * bucket.element_size()

    def _clock(self) -> float:
        """Wall-clock seconds after the device's queued work (0 when not :attr:`timed`)."""
        if not self.timed:
            return 0.0
        if self.group.device.type == "cuda":
            torch.cuda.synchronize(self.group.device)
        return time.perf_counter()


def model_state(model: BaseAlgorithm) -> bytes:
    """What the other ranks need to start from ``model`` (:func:`load_model_state`): its networks' and
    optimizers' state dicts, its other tensors (the temperature) and :data:`COUNTERS`, serialised.

    :param model: rank 0's model, new or resumed.
    """
    _, variables = model._get_torch_save_params()
    state = {
        "parameters": model.get_parameters(),
        "variables": {name: recursive_getattr(model, name) for name in variables},
        "counters": {name: getattr(model, name) for name in COUNTERS},
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_model_state(model: BaseAlgorithm, state: bytes) -> None:
    """Make ``model`` (built from the same configuration) equal to the model :func:`model_state` serialised.

    :param model: this rank's model.
    :param state: :func:`model_state` of rank 0's model.
    """
    loaded = torch.load(io.BytesIO(state), map_location=model.device, weights_only=False)
    model.set_parameters(loaded["parameters"], exact_match=True, device=model.device)
    for name, value in loaded["variables"].items():
        recursive_getattr(model, name).data.copy_(value)
    for name, value in loaded["counters"].items():
        setattr(model, name, value)


def replicate(group: ProcessGroup, model: StyleSAC, timed: bool = False) -> GradientAverager:
    """Make every rank's ``model`` (built from the same configuration) rank 0's, and average its gradients
    across the ranks from now on (every rank must call it at the same point).

    :param group: the process group.
    :param model: this rank's model; rank 0's is sent to the others.
    :param timed: time the all-reduces (:class:`GradientAverager`).
    :return: the :class:`GradientAverager` installed as ``model.gradient_hook``.
    """
    state = group.broadcast(model_state(model) if group.is_main else None)
    if not group.is_main:
        load_model_state(model, state)
    model.gradient_hook = averager = GradientAverager(group, timed)
    return averager
