"""Train StyleSAC on NST-v0: ``python -m agents.train_sac`` (flags in the style of RL Baselines3 Zoo).

With no arguments it trains a MiniStylerPolicy on the built-in sample images at 64 px (a few minutes on a
laptop CPU, with a progress bar). ``--policy RLNSTPolicy --style NAME_OR_PATH`` trains an RL-NST single-style
model instead (the env then pins the style, observes the content photo and rewards the Gram style loss, from
the ``NST-v0/RLNSTPolicy`` entry of the hyper-parameter file). Either writes a run folder::

    runs/style_sac_NST-v0_1/
        model.zip           the trained model (StyleSAC.load)
        config.yml          the hyper-parameters (the file's entry, --hyperparams and flags; env kwargs, seed)
        args.yml            the run's settings (device, log folders, save/eval frequency, time budget, ...)
        monitor/0.monitor.csv  episode rewards and lengths (SB3 Monitor; with --n-envs N, VecMonitor's of all N)
        logs/progress.csv   training metrics (critic loss, temperature, content/style losses, ...); a resumed
                            run adds logs/progress_from_<step>.csv
        checkpoints/        rl_model_<steps>_steps.zip, each with its replay_buffer_<steps>_steps.pkl (the
                            buffers of the newest 2 checkpoints are kept), for --resume
        eval/               EvalCallback results (evaluations.npz) and the best model
        sequence.png        the 1..10 stylisation sequence on fixed evaluation pairs

On several processes (GPUs or machines), each rank with its own envs and replay buffer and the gradients
averaged across ranks at every update (rank 0 alone writes the run folder; :mod:`agents.training.distributed`)::

    torchrun --nproc_per_node 2 -m agents.train_sac --distributed

Interrupting (Ctrl-C or SIGTERM) saves a checkpoint first; ``--resume RUN_DIR`` continues with the same step
count and the saved settings (``args.yml``); a setting given again on the command line replaces the saved one,
with a note. Checkpoints and the model are written atomically (a temporary file renamed once complete), so a
SIGKILL at any moment loses at most the work since the last complete checkpoint (``--save-freq``).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

from agents.cli import cli_main, device_name, float_range, int_range
from agents.errors import ConfigError
from agents.training.config import HYPERPARAMS_DIR, VEC_ENVS, RunSettings, build_config
from agents.training.distributed import process_group
from agents.training.experiment import Experiment, run_distributed

#: ``--image-size`` bounds: NSTEnv's smallest (relu4_* features are image_size/8 wide) and a side whose replay
#: buffer of a few thousand images already needs tens of GB.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 4096
#: Flags that set :class:`~agents.training.config.RunSettings` (``dest`` -> field); ``--no-progress`` inverts.
SETTING_FLAGS = {
    "device": "device",
    "log_folder": "log_folder",
    "tensorboard_log": "tensorboard_log",
    "save_freq": "save_freq",
    "eval_freq": "eval_freq",
    "max_minutes": "max_minutes",
    "no_progress": "progress",
    "verbose": "verbose",
    "dist_timeout": "dist_timeout",
    "vec_env": "vec_env",
}
#: Flags that set hyper-parameters: a resumed run keeps its ``config.yml`` and says so when one is given.
HYPERPARAMETER_FLAGS = ("env", "policy", "image_size", "content_dir", "style_dir", "style", "n_envs", "seed", "init")


def build_parser(description: str = __doc__.split("\n")[0]) -> argparse.ArgumentParser:
    """The training command line (shared with :mod:`agents.cli.train`, which adds ``--algo``).

    :param description: the ``--help`` header.
    """
    defaults = RunSettings()
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env", default="NST-v0", help="environment id")
    p.add_argument("--policy", default=None, help="policy alias (default from the hyper-parameter file)")
    p.add_argument("-n", "--n-timesteps", type=int_range(1), default=None, help="env steps to train for")
    p.add_argument(
        "--image-size", type=int_range(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE), default=None, help="training image side in px"
    )
    p.add_argument("--content-dir", default=None, help="folder of content photos (recursive), e.g. MS-COCO")
    p.add_argument("--style-dir", default=None, help="folder of style images (recursive), e.g. WikiArt")
    p.add_argument("--style", default=None, help="pin one style (path or built-in name): single-style training")
    p.add_argument(
        "--n-envs",
        type=int_range(1, 256),
        default=None,
        help="parallel envs: each step collects one transition per env, and -n counts transitions (--vec-env)",
    )
    p.add_argument(
        "--vec-env",
        choices=VEC_ENVS,
        default=defaults.vec_env,
        help="how --n-envs > 1 envs run: batched (one NSTVectorEnv: one VGG-19, one reward pass per step), subproc "
        "(SubprocVecEnv: a process and a VGG-19 per env) or dummy (DummyVecEnv: one after another)",
    )
    p.add_argument("--device", type=device_name, default=defaults.device, help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0)
    p.add_argument("-f", "--log-folder", default=defaults.log_folder, help="where run folders are created")
    p.add_argument("--tensorboard-log", default=None, help="also log to TensorBoard in this folder")
    p.add_argument(
        "--save-freq", type=int_range(0), default=defaults.save_freq, help="checkpoint every N env steps (0: never)"
    )
    p.add_argument(
        "--eval-freq", type=int_range(0), default=defaults.eval_freq, help="evaluate every N env steps (0: never)"
    )
    p.add_argument(
        "--max-minutes",
        type=float_range(0.0),
        default=None,
        help="stop training after this many minutes of wall-clock time (then save and finish as "
        "usual; -n stays the upper bound)",
    )
    p.add_argument(
        "--hyperparams",
        nargs="*",
        default=[],
        metavar="KEY:VALUE",
        help="override hyper-parameters, e.g. batch_size:16 buffer_size:5000 use_amp:true "
        "policy_kwargs.actor_lr_ratio:0.2",
    )
    p.add_argument(
        "--init",
        default=None,
        help="start actor+builder from released weights: rlministyler, rlministyler_ft128, or rlnst:blue_swirls "
        "(fire, maxresdefault; selects RLNSTPolicy and, unless --style is given, its style); default: the "
        "hyper-parameter file's (NST-v0: rlministyler); 'none': from scratch",
    )
    p.add_argument(
        "--resume",
        default=None,
        help="run folder or checkpoint zip to continue from, with its saved settings (with -n: a new total step "
        "count; a setting flag given again replaces the saved one)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="one rank of a torchrun launch (torchrun --nproc_per_node N -m agents.train_sac --distributed ...): "
        "gradients averaged across ranks, each with its own envs and replay buffer; -n counts each rank's steps",
    )
    p.add_argument(
        "--dist-timeout",
        type=float_range(0.0),
        default=defaults.dist_timeout,
        help="seconds a distributed rank waits for the others (joining, each all-reduce) before ending with an "
        "error; longer than rank 0's evaluations and checkpoint saves",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("-v", "--verbose", type=int_range(0, 2), default=defaults.verbose)
    return p


def given_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The ``dest`` of every flag on the command line itself (not left at its default).

    :param parser: the command's parser.
    :param argv: the command line (``None``: ``sys.argv[1:]``).
    """
    bare = copy.deepcopy(parser)
    for action in bare._actions:
        action.default = argparse.SUPPRESS
    return set(vars(bare.parse_args(argv)))


def settings_of(args: argparse.Namespace, only: set[str] | None = None) -> dict[str, object]:
    """The :class:`RunSettings` fields that ``args`` set (all of them, or those whose flags are in ``only``).

    :param args: the parsed command line.
    :param only: flag ``dest`` names to keep (``None``: all).
    """
    values = {field: getattr(args, dest) for dest, field in SETTING_FLAGS.items() if only is None or dest in only}
    if "progress" in values:
        values["progress"] = not values["progress"]
    return values


def experiment_from_args(args: argparse.Namespace, given: set[str], algo: str = "style_sac") -> Experiment:
    """The run the command line asks for: a new one, or the one ``--resume`` continues.

    :param args: the parsed command line.
    :param given: the flags on the command line itself (:func:`given_flags`).
    :param algo: the algorithm (``--algo``).
    """
    if args.resume:
        ignored = sorted(f"--{dest.replace('_', '-')}" for dest in given & {*HYPERPARAMETER_FLAGS, "hyperparams"})
        if ignored:
            print(f"note: --resume keeps the run's config.yml: {', '.join(ignored)} ignored.")
        return Experiment.resume(Path(args.resume), algo, settings_of(args, given), args.n_timesteps)
    config = build_config(
        args.env,
        policy=args.policy,
        overrides=args.hyperparams,
        n_timesteps=args.n_timesteps,
        n_envs=args.n_envs,
        env_kwargs={
            "image_size": args.image_size,
            "content_dir": args.content_dir,
            "style_dir": args.style_dir,
            "style": args.style,
        },
        seed=args.seed,
        init=args.init,
        hyperparams_file=HYPERPARAMS_DIR / f"{algo}.yml",
    )
    return Experiment.create(algo, config, RunSettings(**settings_of(args)))  # type: ignore[arg-type]


def train(parser: argparse.ArgumentParser, argv: list[str] | None, algo: str | None = None) -> int:
    """Parse ``argv`` with ``parser`` and train: in this process, or as one rank of a torchrun launch.

    :param parser: the command's parser (:func:`build_parser`, with ``--algo`` for :mod:`agents.cli.train`).
    :param argv: the command line (``None``: ``sys.argv[1:]``).
    :param algo: the algorithm (``None``: ``--algo``).
    :return: the exit status (130: interrupted).
    """
    args = parser.parse_args(argv)
    given = given_flags(parser, argv)
    algo = algo or args.algo
    torch.set_flush_denormal(True)  # process-wide, so the command's: denormals slow CPU convolutions down by up to 2x
    if algo != "style_sac" and (args.init or args.distributed):
        raise ConfigError("--init and --distributed are StyleSAC options (--algo style_sac).")
    if not args.distributed:
        return experiment_from_args(args, given, algo).run()
    with process_group(args.device, args.dist_timeout) as group:
        args.device = str(group.device)
        return run_distributed(lambda: experiment_from_args(args, given | {"device"}, algo), group)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m agents.train_sac``: parse the command line and train; bad input ends it with a one-line error
    and exit status 2 (:func:`agents.cli.cli_main`)."""
    return train(build_parser(), argv, "style_sac")


if __name__ == "__main__":
    sys.exit(main())
