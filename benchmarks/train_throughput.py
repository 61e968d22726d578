"""StyleSAC training throughput and where its time goes, at several image sizes.

    python -m benchmarks.train_throughput                         # 64, 128, 256 px on the CPU
    python -m benchmarks.train_throughput --sizes 64 --steps 50 --threads 1

For each size, StyleSAC (``agents/training/hyperparams/style_sac.yml``, one update of batch 8 per env step) first
collects ``batch_size`` steps and makes one update (warm-up), then trains ``--steps`` env steps (fewer if
``--budget-s`` runs out, in chunks of ``--chunk``) while timers wrapped around its parts record *exclusive*
wall-clock time (a part's time excludes the parts it calls):

- collection: the env's VGG-19 (reward; and reset, 2 images per episode), the rest of the env step, the
  policy's actor / style branch / builder forwards at batch 1, the rest of SB3's rollout loop;
- update: replay sampling, critic / actor / style-branch / builder forwards, the agent's VGG-19 forwards
  (reference pass on the replayed moving + style images without grad; output pass with grad), backward +
  optimizer step of each of the three losses (the VGG-19 backward is inside the generative one), the rest.

A micro-benchmark at the same size times the VGG-19 passes in isolation (env: 1 image; reference: 16
images, or 8 if the style statistics were cached; output: 8 images forward + backward), and the number of
images each VGG-19 call processes is counted, which answers whether features are computed twice per step.
Each size runs twice, side by side: with the agent recomputing the replayed states' VGG-19 features
(``share_env_features=False``) and with them taken from the env (the default, see
:class:`agents.style_sac.buffers.FeatureReplayBuffer`).

With ``--n-envs N`` (N > 1) each size also trains, without timers, on N envs run by each of ``--vec-envs`` (the
batched env, SB3's ``SubprocVecEnv`` and ``DummyVecEnv``: :func:`agents.training.experiment.make_env`) with StyleSAC's
``use_amp`` off and on (``--amp``), as ``python -m agents.train_sac --n-envs N --vec-env KIND`` does: one update per
vec env step, so N transitions per update. These rows are interleaved in rounds (``--rounds``) so that a change of
the machine's speed touches every variant alike; a rate is the median round's.
Writes ``train_throughput.{md,csv,json}`` and ``train_throughput.png`` under ``--out``.

    python -m benchmarks.train_throughput --sizes 64 --threads 1 --n-envs 8
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.cli import cli_main, float_range, int_range
from agents.style_sac import StyleSAC
from agents.training.config import VEC_ENVS, algorithm_kwargs
from agents.training.experiment import make_env
from benchmarks.common import (
    Report,
    Row,
    benchmark_parser,
    configure_torch,
    machine_info,
    pyplot,
    save_figure,
    settings_of,
    style_sac_config,
    synchronize,
    time_calls,
)
from nst_env.losses import STYLE_LAYERS
from nst_env.utils import resolve_device

#: The top-level phases of an env step of an off-policy algorithm, and what their own (exclusive) time is.
PHASES = {"collect": "other (SB3 rollout loop, buffer add)", "update": "other (loss algebra, Polyak, logging)"}


class Stopwatch:
    """Exclusive wall-clock time of named, possibly nested sections, grouped by top-level phase.

    A section's time excludes the sections opened inside it, so the totals partition the measured wall time.
    Counters record quantities (e.g. images through VGG-19) per section name.

    :param device: synchronised at every section boundary when CUDA, so GPU time lands in the right section.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self._stack: list[list[Any]] = []  # [name, start, time spent in children]

    def reset(self) -> None:
        """Forget what was measured so far (e.g. after a warm-up)."""
        self.seconds.clear()
        self.counts.clear()

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Time a block as ``name`` under the current top-level phase (``name`` itself when outermost).

        :param name: the section's name.
        """
        synchronize(self.device)
        frame = [name, time.perf_counter(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            synchronize(self.device)
            elapsed = time.perf_counter() - frame[1]
            self._stack.pop()
            phase = self._stack[0][0] if self._stack else name
            self.seconds[(phase, name)] += elapsed - frame[2]
            if self._stack:
                self._stack[-1][2] += elapsed

    def wrap(
        self, owner: Any, attribute: str, name: str | Callable[..., str], count: Callable[..., int] | None = None
    ) -> None:
        """Replace ``owner.attribute`` (a method, or a module's ``forward``) by a timed version.

        :param owner: the object whose attribute is wrapped (this instance only).
        :param attribute: the method's name.
        :param name: the section name, or a function of the call's arguments giving it.
        :param count: a function of the call's arguments giving a quantity to add to the section's counter.
        """
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            label = name(*args, **kwargs) if callable(name) else name
            if count is not None:
                self.counts[label] += count(*args, **kwargs)
            with self.section(label):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)


def _agent_vgg_name(images: torch.Tensor, *args: Any, **kwargs: Any) -> str:
    grad = torch.is_grad_enabled() and images.requires_grad
    return "agent VGG-19 fwd, output (grad)" if grad else "agent VGG-19 fwd, reference (no grad)"


def instrument(model: StyleSAC, stopwatch: Stopwatch) -> None:
    """Wrap the parts of ``model`` (and its single env) with ``stopwatch`` timers.

    :param model: a StyleSAC with a ``MiniStylerPolicy`` and one env.
    :param stopwatch: where the times go.
    """
    policy = model.policy
    images = lambda x, *a, **k: int(x.shape[0])
    stopwatch.wrap(model, "collect_rollouts", "collect")
    stopwatch.wrap(model, "train", "update")
    stopwatch.wrap(model.env, "step", "env step: other (uint8, loss, Monitor)")
    stopwatch.wrap(model.env.envs[0].unwrapped.vgg, "forward", "env VGG-19 fwd (reward, reset)", images)  # type: ignore[attr-defined]
    stopwatch.wrap(model.vgg, "forward", _agent_vgg_name, images)
    stopwatch.wrap(model.replay_buffer, "sample", "replay sampling")
    stopwatch.wrap(policy.actor, "forward", "actor fwd (moving image)")
    stopwatch.wrap(policy.actor, "encode_style", "actor style branch fwd")
    stopwatch.wrap(policy.builder, "forward", "builder fwd")
    for critic in [*policy.critic, *policy.critic_target]:
        stopwatch.wrap(critic, "forward", "critic fwd")
    optimizers = {
        id(policy.critic.optimizer): "critic",
        id(policy.generative_optimizer): "generative (incl. VGG-19 bwd)",
        id(policy.actor.optimizer): "actor",
    }
    stopwatch.wrap(model, "_step", lambda optimizer, loss: f"backward + Adam: {optimizers[id(optimizer)]}")


def vgg_costs(model: StyleSAC, size: int, batch_size: int, repeats: int) -> dict[str, float]:
    """Median seconds of the VGG-19 passes of one env step, timed in isolation on the model's VGG.

    :param model: provides the VGG-19 and the device.
    :param size: image side in px.
    :param batch_size: the update's batch size.
    :param repeats: timed calls per pass.
    """
    vgg, device = model.vgg, model.device
    layers = STYLE_LAYERS["meanstd"]

    def forward(n: int) -> Callable[[], Any]:
        x = torch.rand(n, 3, size, size, device=device)

        def call() -> None:
            with torch.no_grad():
                vgg(x, layers)

        return call

    def forward_backward() -> None:
        x = torch.rand(batch_size, 3, size, size, device=device, requires_grad=True)
        sum(f.mean() for f in vgg(x, layers).values()).backward()

    calls = {
        "env pass (1 image)": forward(1),
        f"reference pass ({2 * batch_size} images)": forward(2 * batch_size),
        f"reference pass, style cached ({batch_size} images)": forward(batch_size),
        f"output pass fwd + bwd ({batch_size} images)": forward_backward,
    }
    return {name: time_calls(call, device, repeats).median for name, call in calls.items()}


def measure(
    size: int, share: bool, steps: int, chunk: int, budget_s: float, device: torch.device, seed: int, log_dir: Path
) -> tuple[Row, list[Row], dict[str, float]]:
    """Train StyleSAC at one size under timers.

    :param size: image side in px.
    :param share: StyleSAC's ``share_env_features``.
    :param steps: env steps to measure (at most).
    :param chunk: env steps per ``learn`` call (the budget is checked between chunks).
    :param budget_s: stop measuring after the first chunk that ends past this many seconds.
    :param device: where env VGG-19, networks and agent VGG-19 run.
    :param seed: seed of env and networks.
    :param log_dir: folder for the env's Monitor file.
    :return: the throughput row, the per-part rows, and the isolated VGG-19 costs.
    """
    config = style_sac_config(size, seed)
    batch_size = config["batch_size"]
    config.update(learning_starts=batch_size, buffer_size=batch_size + steps + chunk + 1)
    env = make_env(config, log_dir / f"{size}px_{variant_name(share)}", str(device), resume=False)
    model = StyleSAC(
        config["policy"], env, seed=seed, device=device, share_env_features=share, **algorithm_kwargs(config)
    )
    model.learn(batch_size + 1)  # warm-up: fill the batch, one update
    stopwatch = Stopwatch(device)
    instrument(model, stopwatch)
    start = time.perf_counter()
    while model.num_timesteps < batch_size + 1 + steps and time.perf_counter() - start < budget_s:
        model.learn(chunk, reset_num_timesteps=False)
    wall = time.perf_counter() - start
    measured = model.num_timesteps - batch_size - 1
    env.close()
    collect = sum(s for (phase, _), s in stopwatch.seconds.items() if phase == "collect")
    update = sum(s for (phase, _), s in stopwatch.seconds.items() if phase == "update")
    counts = {name: n / measured for name, n in stopwatch.counts.items()}
    row: Row = {
        "size": size,
        "vgg_features": variant_name(share),
        "env_steps": measured,
        "updates": measured,
        "wall_s": wall,
        "env_steps_per_s": measured / wall,
        "updates_per_s": measured / wall,
        "collect_only_steps_per_s": measured / collect,
        "update_only_per_s": measured / update,
        "vgg_images_env_per_step": counts.get("env VGG-19 fwd (reward, reset)", 0.0),
        "vgg_images_agent_reference_per_update": counts.get("agent VGG-19 fwd, reference (no grad)", 0.0),
        "vgg_images_agent_output_per_update": counts.get("agent VGG-19 fwd, output (grad)", 0.0),
    }
    parts = [
        {
            "size": size,
            "vgg_features": variant_name(share),
            "phase": phase,
            "part": PHASES.get(name, name),
            "ms_per_step": 1e3 * s / measured,
            "share": s / wall,
        }
        for (phase, name), s in sorted(stopwatch.seconds.items(), key=lambda kv: (kv[0][0], -kv[1]))
    ]
    parts.append(
        {
            "size": size,
            "vgg_features": variant_name(share),
            "phase": "-",
            "part": "outside collect/update (SB3 learn loop)",
            "ms_per_step": 1e3 * (wall - collect - update) / measured,
            "share": (wall - collect - update) / wall,
        }
    )
    return row, parts, vgg_costs(model, size, batch_size, repeats=3)


def measure_vec_envs(
    size: int, n_envs: int, kinds: list[str], amps: list[bool], steps: int, rounds: int, device: torch.device, seed: int
) -> list[Row]:
    """Train StyleSAC on ``n_envs`` envs run by each vec env kind, with AMP off and on, interleaved in rounds.

    :param size: image side in px.
    :param n_envs: envs per vec env.
    :param kinds: vec env kinds (:data:`agents.training.config.VEC_ENVS`).
    :param amps: the ``use_amp`` values to compare.
    :param steps: vec env steps (= updates) per round.
    :param rounds: timed rounds per variant; the median round's rate is reported.
    :param device: where the envs' VGG-19, the networks and the agent's VGG-19 run.
    :param seed: seed of envs and networks.
    :return: one row per variant: env steps/s (all envs) and updates/s.
    """
    config = style_sac_config(size, seed)
    config["n_envs"] = n_envs
    batch_size = config["batch_size"]
    vec_steps_first = -(-batch_size // n_envs)  # vec env steps that fill one batch
    config.update(learning_starts=vec_steps_first * n_envs, buffer_size=(vec_steps_first + 1 + steps * rounds) * n_envs)
    models = {}
    for kind in kinds:
        for amp in amps:
            env = make_env(config, None, str(device), resume=False, vec_env=kind)
            model = StyleSAC(
                config["policy"], env, seed=seed, device=device, **{**algorithm_kwargs(config), "use_amp": amp}
            )
            model.learn((vec_steps_first + 1) * n_envs)  # warm-up: fill the batch, one update
            models[kind, amp] = model
    seconds: dict[tuple[str, bool], list[float]] = defaultdict(list)
    for _ in range(rounds):
        for key, model in models.items():
            synchronize(device)
            start = time.perf_counter()
            model.learn(steps * n_envs, reset_num_timesteps=False)
            synchronize(device)
            seconds[key].append(time.perf_counter() - start)
    rows = []
    for (kind, amp), model in models.items():
        model.env.close()
        median = float(np.median(seconds[kind, amp]))
        rows.append(
            {
                "size": size,
                "n_envs": n_envs,
                "vec_env": kind,
                "amp": "bfloat16" if amp and device.type == "cpu" else ("float16" if amp else "off"),
                "updates": steps * rounds,
                "env_steps_per_s": steps * n_envs / median,
                "updates_per_s": steps / median,
            }
        )
    for row in rows:
        row["vs_first"] = row["env_steps_per_s"] / rows[0]["env_steps_per_s"]
    return rows


def variant_name(share: bool) -> str:
    """How the agent gets the replayed states' VGG-19 features."""
    return "from env" if share else "recomputed"


def plot(parts: list[Row], path: Path) -> None:
    """Stacked bars: milliseconds per env step by part, one bar per size and variant."""
    plt = pyplot()
    bars = list(dict.fromkeys(f"{p['size']} px\n{p['vgg_features']}" for p in parts))
    names = list(dict.fromkeys(f"{p['phase']}: {p['part']}" for p in parts))
    fig, ax = plt.subplots(figsize=(9, 5))
    bottom = np.zeros(len(bars))
    colours = plt.get_cmap("tab20")
    for i, name in enumerate(names):
        values = np.array(
            [
                sum(
                    float(p["ms_per_step"])
                    for p in parts
                    if f"{p['phase']}: {p['part']}" == name and f"{p['size']} px\n{p['vgg_features']}" == bar
                )
                for bar in bars
            ]
        )
        ax.bar(bars, values, bottom=bottom, label=name, color=colours(i % 20))
        bottom += values
    ax.set_xlabel("image side and where the agent's VGG-19 targets come from")
    ax.set_ylabel("ms per env step (exclusive time)")
    ax.set_yscale("log")
    ax.set_title("StyleSAC training step: where the time goes", fontsize=10)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_figure(fig, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    p = benchmark_parser(__doc__, seed_help="seed of envs and networks")
    p.add_argument("--sizes", type=int_range(16, 4096), nargs="+", default=[64, 128, 256], help="image sides in px")
    p.add_argument("--steps", type=int_range(1), default=30, help="measured env steps per size, at most")
    p.add_argument("--chunk", type=int_range(1), default=5, help="env steps per learn() call")
    p.add_argument(
        "--budget-s", type=float_range(0.0), default=120.0, help="stop a size after the chunk that passes this"
    )
    p.add_argument("--log-dir", type=Path, default=Path("runs/train_throughput"), help="Monitor files")
    p.add_argument(
        "--n-envs", type=int_range(1, 1024), default=1, help="also compare vec envs and AMP with this many envs (> 1)"
    )
    p.add_argument("--vec-envs", nargs="+", choices=VEC_ENVS, default=list(VEC_ENVS), help="vec envs to compare")
    p.add_argument(
        "--amp", nargs="+", choices=("off", "on"), default=["off", "on"], help="StyleSAC use_amp values to compare"
    )
    p.add_argument("--vec-steps", type=int_range(1), default=4, help="vec env steps per round, --n-envs comparison")
    p.add_argument("--rounds", type=int_range(1), default=3, help="interleaved rounds, --n-envs comparison")
    return p.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> list[Row]:
    """Measure every size; write tables and the figure; return the throughput rows."""
    args = parse_args(argv)
    configure_torch(args.threads)
    device = resolve_device(args.device)
    machine = machine_info(device)
    rows, parts, vgg_rows, vec_rows = [], [], [], []
    for size in args.sizes:
        for share in (False, True):
            row, size_parts, vgg = measure(
                size, share, args.steps, args.chunk, args.budget_s, device, args.seed, args.log_dir
            )
            rows.append(row)
            parts += size_parts
            print(
                f"{size:>4} px, features {row['vgg_features']}: {row['env_steps_per_s']:.3f} env steps/s "
                f"({row['env_steps']} steps)",
                flush=True,
            )
        vgg_rows += [{"size": size, "pass": name, "ms": 1e3 * s} for name, s in vgg.items()]
        recomputed = rows[-2]["updates_per_s"]
        for row in rows[-2:]:
            row["speedup_vs_recomputed"] = row["updates_per_s"] / recomputed
        if args.n_envs > 1:
            amps = [a == "on" for a in args.amp]
            size_rows = measure_vec_envs(
                size, args.n_envs, args.vec_envs, amps, args.vec_steps, args.rounds, device, args.seed
            )
            for row in size_rows:
                print(
                    f"{size:>4} px, {args.n_envs} envs, {row['vec_env']:>8}, AMP {row['amp']:>8}: "
                    f"{row['env_steps_per_s']:.3f} env steps/s, {row['updates_per_s']:.3f} updates/s",
                    flush=True,
                )
            vec_rows += size_rows
    args.out.mkdir(parents=True, exist_ok=True)
    plot(parts, args.out / "train_throughput.png")
    Report(
        name="train_throughput",
        title="StyleSAC training throughput (MiniStylerPolicy, batch 8, one update per env step)",
        columns=[
            "size",
            "vgg_features",
            "env_steps",
            "env_steps_per_s",
            "updates_per_s",
            "speedup_vs_recomputed",
            "collect_only_steps_per_s",
            "update_only_per_s",
            "vgg_images_env_per_step",
            "vgg_images_agent_reference_per_update",
            "vgg_images_agent_output_per_update",
        ],
        rows=rows,
        settings=settings_of(args),
        machine=machine,
        notes=[
            (
                "`collect_only_steps_per_s`: env steps per second of data collection alone (acting + env); "
                "`update_only_per_s`: updates per second of the update alone. `vgg_images_*`: images through VGG-19 "
                "per env step / update (the env's includes 2 per reset, every 10 steps)."
            ),
            (
                "Parts: exclusive wall-clock time of each part (a part excludes the parts it calls), per env step, "
                "and its share of the measured wall time. The generative backward includes the VGG-19 backward "
                "(see the isolated VGG-19 passes for its size)."
            ),
            (
                "`vgg_features`: `recomputed`: the agent's reference pass runs VGG-19 (no grad) on the replayed "
                "moving images, whose features the env computed when it produced them (its reward pass), and on their "
                "style images, whose statistics the env computed at reset; `from env` (the default): those are stored "
                "in the replay buffer and the agent's VGG-19 sees only the 8 built images. `speedup_vs_recomputed`: "
                "updates/s over the recomputed variant's at the same size, measured in this run. Still computed more "
                "than once: the style branch of the actor encodes the same "
                "style images for the critic target (next state), the generative sample and, every 4th update, the "
                "actor update (the style is fixed within an episode), and during collection at every env step."
            ),
        ],
        extra_tables=[
            *(
                [
                    (
                        "Vec envs and AMP (uninstrumented; `vs_first`: env steps/s over the first row's of the size)",
                        vec_rows,
                        ["size", "n_envs", "vec_env", "amp", "updates", "env_steps_per_s", "updates_per_s", "vs_first"],
                    )
                ]
                if vec_rows
                else []
            ),
            ("Where the time goes", parts, ["size", "vgg_features", "phase", "part", "ms_per_step", "share"]),
            ("VGG-19 passes timed in isolation (median ms)", vgg_rows, ["size", "pass", "ms"]),
        ],
    ).write(args.out)
    return rows


if __name__ == "__main__":
    main()
