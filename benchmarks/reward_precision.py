"""How far the env's bfloat16 reward pass is from its float32 one, on the images a trained policy makes.

    python -m benchmarks.reward_precision --sizes 64 128 --n-envs 8 --episodes 2
    python -m benchmarks.reward_precision --content-dir data/corpus_split/eval/photos --style-dir data/corpus_split/eval/art

Two :class:`~nst_env.vector.NSTVectorEnv`s, ``precision="float32"`` and ``"bfloat16"``, seeded alike, receive the
same actions: a released model's deterministic steps (``--model``) on the float32 env's observations, so both envs
see the same images and only the reward pass differs. Per size: the relative reward difference
``|r_bf16 - r_f32| / |r_f32|`` (median, 95th percentile, max over every env step), and how often the two agree on
what a learner uses, the sign of the reward's change from one step to the next. Whether the CPU runs bfloat16
natively (``torch.backends.cpu.get_cpu_capability()``) and the median seconds of one reward step in each precision
are recorded, since bfloat16 pays only where the hardware has it. Writes ``reward_precision.{md,csv,json}``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from agents.cli import cli_main, int_range
from agents.inference.models import load_policy
from benchmarks.common import Report, Row, benchmark_parser, configure_torch, machine_info, settings_of, synchronize
from nst_env import NSTVectorEnv
from nst_env.reward import PRECISIONS
from nst_env.utils import resolve_device


def measure(
    size: int,
    n_envs: int,
    episodes: int,
    model: str,
    device: torch.device,
    seed: int,
    content_dir: Path | None,
    style_dir: Path | None,
) -> Row:
    """Both precisions' rewards on the same images, over ``episodes`` episodes of ``n_envs`` envs.

    :param size: the image side.
    :param n_envs: envs per vec env.
    :param episodes: episodes per env (10 steps each).
    :param model: the released model or StyleSAC zip that acts.
    :param device: where the envs' VGG-19 and the policy run.
    :param seed: the envs' seed.
    :param content_dir: content photos (``None``: the built-in ones).
    :param style_dir: style images (``None``: the built-in ones).
    """
    kwargs = {"image_size": size, "device": device, "content_dir": content_dir, "style_dir": style_dir}
    envs = {p: NSTVectorEnv(n_envs, precision=p, **kwargs) for p in PRECISIONS}
    obs = {p: env.reset(seed=seed)[0] for p, env in envs.items()}
    policy = load_policy(model, device)
    policy.set_training_mode(False)
    rewards: dict[str, list[np.ndarray]] = {p: [] for p in PRECISIONS}
    seconds: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for _ in range(episodes * envs["float32"].max_episode_steps):
        tensors = {k: torch.as_tensor(obs["float32"][k], device=device) for k in policy.required_keys}
        with torch.no_grad():
            action = policy.act(tensors, deterministic=True)[1].cpu().numpy()
        for p, env in envs.items():
            synchronize(device)
            start = time.perf_counter()
            obs[p], reward, *_ = env.step(action)
            synchronize(device)
            seconds[p].append(time.perf_counter() - start)
            rewards[p].append(np.asarray(reward, np.float64))
    for env in envs.values():
        env.close()
    r32, r16 = (np.stack(rewards[p]) for p in PRECISIONS)  # steps x envs
    relative = np.abs(r16 - r32) / np.abs(r32)
    steps = envs["float32"].max_episode_steps
    within = np.arange(len(r32)) % steps != 0  # a step whose previous step is in the same episode
    change32, change16 = (np.diff(r, axis=0)[within[1:]] for r in (r32, r16))
    return {
        "size": size,
        "n_envs": n_envs,
        "env_steps": r32.size,
        "reward_f32_median": float(np.median(r32)),
        "rel_diff_median": float(np.median(relative)),
        "rel_diff_p95": float(np.percentile(relative, 95)),
        "rel_diff_max": float(relative.max()),
        "same_sign_of_change": float(np.mean(np.sign(change32) == np.sign(change16))),
        "step_s_float32": float(np.median(seconds["float32"])),
        "step_s_bfloat16": float(np.median(seconds["bfloat16"])),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = benchmark_parser(__doc__, seed_help="the envs' seed")
    p.add_argument("--sizes", type=int_range(16, 4096), nargs="+", default=[64, 128], help="image sides in px")
    p.add_argument("--n-envs", type=int_range(1, 1024), default=8, help="envs per vec env")
    p.add_argument("--episodes", type=int_range(1), default=2, help="episodes per env")
    p.add_argument("--model", default="rlministyler", help="released model name or StyleSAC zip that acts")
    p.add_argument("--content-dir", type=Path, default=None, help="content photos (default: the built-in ones)")
    p.add_argument("--style-dir", type=Path, default=None, help="style images (default: the built-in ones)")
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> list[Row]:
    """Measure every size; write and return the table."""
    args = parse_args(argv)
    configure_torch(args.threads)
    device = resolve_device(args.device)
    machine = machine_info(device)
    machine["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    rows = []
    for size in args.sizes:
        row = measure(size, args.n_envs, args.episodes, args.model, device, args.seed, args.content_dir, args.style_dir)
        rows.append(row)
        print(row, flush=True)
    Report(
        name="reward_precision",
        title="NST-v0's reward: bfloat16 reward pass against float32, on a policy's images",
        columns=[
            "size",
            "n_envs",
            "env_steps",
            "reward_f32_median",
            "rel_diff_median",
            "rel_diff_p95",
            "rel_diff_max",
            "same_sign_of_change",
            "step_s_float32",
            "step_s_bfloat16",
        ],
        rows=rows,
        settings=settings_of(args),
        machine=machine,
        notes=[
            f"`rel_diff_*`: |r_bf16 - r_f32| / |r_f32| over every env step; `same_sign_of_change`: share of steps "
            f"(within an episode) whose reward change from the step before has the same sign in both precisions. "
            f"`step_s_*`: median seconds of one vec env step, a side note (not a timing benchmark: "
            f"`env_throughput` is); this CPU's capability: {machine['cpu_capability']} (bfloat16 is native with "
            f"AVX512_BF16 or AMX)."
        ],
    ).write(args.out)
    return rows


if __name__ == "__main__":
    main()
