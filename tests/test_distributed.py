"""Distributed StyleSAC on the CPU (gloo, 2 ranks, 16 px): the averaged gradient is that of the ranks' batches
together, the ranks' weights stay bit-identical, a killed rank ends the run with a one-line error, and a torchrun
launch of ``agents.train_sac --distributed`` resumes it into one model that ``agents.stylize`` loads; ``-m slow``:
``benchmarks.scaling`` at 1 and 2 ranks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agents import StyleSAC
from agents.cli import stylize, train_sac
from agents.training.config import algorithm_kwargs
from agents.training.distributed import LAUNCH_VARIABLES, process_group, replicate
from agents.training.experiment import make_env
from benchmarks import scaling
from benchmarks.common import style_sac_config

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Tiny runs: 16 px, updates from step 5 on, batches of 2.
TINY = {"learning_starts": 4, "batch_size": 2, "buffer_size": 20}
FLAGS = ["--image-size", "16", "--eval-freq", "0", "--no-progress", "--device", "cpu"]
HYPERPARAMS = ["--hyperparams", *(f"{key}:{value}" for key, value in TINY.items())]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_environment(rank: int, port: int) -> dict[str, str]:
    """What torchrun would set for rank ``rank`` of 2 on this machine."""
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def subprocess_environment(**extra: str) -> dict[str, str]:
    """The test's environment for a subprocess that imports this checkout, with one torch thread."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def train_rank(rank: int, port: int, out: str) -> None:
    """One rank (``torch.multiprocessing.spawn``): check the gradient averaging on the critic, train 3 updates
    and save what the test compares."""
    os.environ.update(rank_environment(rank, port))
    torch.set_num_threads(1)
    with process_group("cpu", 60.0) as group:
        config = style_sac_config(16, group.seed(0, 1), TINY)
        env = make_env(config, None, "cpu", resume=False)
        model = StyleSAC(config["policy"], env, seed=config["seed"], device="cpu", **algorithm_kwargs(config))
        average = replicate(group, model)

        # The critic's gradient on this rank's half of a batch, averaged over the ranks, is the whole batch's.
        generator = torch.Generator().manual_seed(0)
        moving = torch.rand(4, 3, 16, 16, generator=generator)
        latents = torch.randn(4, *model.latent_space.shape, generator=generator)
        targets = torch.randn(4, generator=generator)
        critic = model.policy.critic

        def critic_gradients(rows: slice, averaged: bool) -> list[torch.Tensor]:
            q_values = model.policy.q_values({"moving": moving[rows]}, latents[rows])
            loss = 0.5 * sum(F.mse_loss(q, targets[rows]) for q in q_values)
            critic.optimizer.zero_grad()
            loss.backward()
            if averaged:
                average(critic.optimizer)
            return [p.grad.clone() for p in critic.parameters()]

        whole = critic_gradients(slice(0, 4), averaged=False)
        halves = critic_gradients(slice(2 * rank, 2 * rank + 2), averaged=True)
        for expected, averaged in zip(whole, halves):
            torch.testing.assert_close(averaged, expected, rtol=1e-5, atol=1e-7)
        assert average.calls == 1 and average.bytes == 4 * sum(p.numel() for p in critic.parameters())

        model.learn(TINY["learning_starts"] + 3)  # 3 updates
        env.close()
    torch.save(
        {
            "parameters": model.get_parameters(),
            "log_ent_coef": model.log_ent_coef,
            "n_updates": model._n_updates,
            "moving": model.replay_buffer.observations["moving"][: model.replay_buffer.pos],
        },
        Path(out) / f"rank{rank}.pt",
    )


def tensors(tree: Any) -> list[torch.Tensor]:
    """Every tensor in nested dicts and lists, in order."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for key in sorted(tree, key=str) for t in tensors(tree[key])]
    if isinstance(tree, (list, tuple)):
        return [t for item in tree for t in tensors(item)]
    return []


def test_averaged_gradients_are_the_union_batch_gradients_and_ranks_stay_identical(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(train_rank, args=(free_port(), str(tmp_path)), nprocs=2)
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert first["n_updates"] == second["n_updates"] == 3
    assert first["log_ent_coef"].item() != np.log(0.001)  # the temperature learned
    assert not np.array_equal(first["moving"], second["moving"])  # each rank its own envs and replay buffer
    ours, theirs = tensors(first["parameters"]), tensors(second["parameters"])  # weights and optimizer states
    assert len(ours) == len(theirs) > 100
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert torch.equal(first["log_ent_coef"], second["log_ent_coef"])


#: Rank 1 of the first launch: SIGKILLs itself at its third update (after rank 0's checkpoint of step 5).
KILLED_AT_THIRD_UPDATE = """
import os, signal, sys
from agents.cli import train_sac
from agents.style_sac import StyleSAC
train = StyleSAC.train
def train_or_die(self, *args, **kwargs):
    if self._n_updates == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return train(self, *args, **kwargs)
StyleSAC.train = train_or_die
sys.exit(train_sac.main(sys.argv[1:]))
"""


def test_a_killed_rank_ends_the_run_and_torchrun_resumes_it_into_one_model(tmp_path: Path) -> None:
    port = free_port()
    run_flags = ["--distributed", "--dist-timeout", "30", "-n", "20", "-f", str(tmp_path / "runs"), "--save-freq", "5"]
    argv = [*run_flags, *FLAGS, *HYPERPARAMS]
    main = subprocess.Popen(
        [sys.executable, "-m", "agents.train_sac", *argv],
        env=subprocess_environment(**rank_environment(0, port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AT_THIRD_UPDATE, *argv],
        env=subprocess_environment(**rank_environment(1, port)),
        capture_output=True,
        timeout=300,
    )
    _, err = main.communicate(timeout=300)
    assert killed.returncode == -9
    assert main.returncode == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: distributed training stopped on rank 0 of 2: another rank")
    (run,) = (tmp_path / "runs").iterdir()
    checkpoints = run / "checkpoints"
    assert {p.name for p in checkpoints.iterdir()} == {"rl_model_5_steps.zip", "replay_buffer_5_steps.pkl"}

    resumed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        + ["-m", "agents.train_sac", "--distributed", "--resume", str(run), "-n", "8", *FLAGS],
        env=subprocess_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "Replay buffer: replay_buffer_5_steps.pkl" in resumed.stdout
    assert "note: rank 1 starts with an empty replay buffer" in resumed.stderr
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run.name]  # rank 0's run folder only
    assert (run / "sequence.png").is_file()
    assert StyleSAC.load(run / "model.zip", device="cpu", buffer_size=1).num_timesteps == 8

    out = tmp_path / "stylized"
    argv = ["--model", str(run / "model.zip"), "--content", "chelsea", "--style", "starry_night", "--steps", "2"]
    assert stylize.main([*argv, "--out", str(out), "--device", "cpu", "--backend", "torch"]) == 0
    assert len(list(out.glob("*step02.png"))) == 1


def test_distributed_outside_torchrun_is_a_one_line_error(tmp_path: Path, monkeypatch, capsys) -> None:
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        train_sac.main(["--distributed", "-f", str(tmp_path), *FLAGS])
    assert exit_info.value.code == 2 and not any(tmp_path.iterdir())
    err = capsys.readouterr().err
    assert err.startswith("error: --distributed runs under torchrun") and len(err.splitlines()) == 1


@pytest.mark.slow  # two torchrun launches: about 35 s on a busy 2-core machine
def test_scaling_benchmark_measures_every_rank_count(tmp_path: Path) -> None:
    argv = ["--ranks", "1", "2", "--image-size", "16", "--steps", "2", "--warmup", "1", "--threads", "1"]
    rows = scaling.main([*argv, "--device", "cpu", "--out", str(tmp_path)])
    assert [row["ranks"] for row in rows] == [1, 2] and rows[0]["speedup"] == 1.0
    for row in rows:
        assert row["env_steps_per_s"] == pytest.approx(row["ranks"] * row["updates_per_s"])
        assert row["allreduces_per_update"] >= 3 and row["allreduce_mib_per_update"] > 0
        assert row["load_1min_before"] is not None
    assert rows[0]["allreduce_mib_per_update"] == rows[1]["allreduce_mib_per_update"]  # the gradients' size
    assert all((tmp_path / f"scaling.{ext}").is_file() for ext in ("md", "csv", "json", "png"))
