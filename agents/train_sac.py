"""Train StyleSAC on NST-v0: ``python -m agents.train_sac`` (flags in the style of RL Baselines3 Zoo).

With no arguments it trains a MiniStylerPolicy on the built-in sample images at 64 px (a few minutes on a
laptop CPU, with a progress bar). ``--policy RLNSTPolicy --style NAME_OR_PATH`` trains an RL-NST single-style
model instead (the env then pins the style, observes the content photo and rewards the Gram style loss, from
the ``NST-v0/RLNSTPolicy`` entry of the hyper-parameter file). Either writes a run folder::

    runs/style_sac_NST-v0_1/
        model.zip           the trained model (StyleSAC.load)
        config.yml          the effective configuration (hyper-parameters, env kwargs, seed, ...)
        monitor/0.monitor.csv  episode rewards and lengths (SB3 Monitor)
        logs/progress.csv   training metrics (critic loss, temperature, content/style losses, ...); a resumed
                            run adds logs/progress_from_<step>.csv
        checkpoints/        rl_model_<steps>_steps.zip, each with its replay_buffer_<steps>_steps.pkl (the
                            buffers of the newest 2 checkpoints are kept), for --resume
        eval/               EvalCallback results (evaluations.npz) and the best model
        sequence.png        the 1..10 stylisation sequence on fixed evaluation pairs

On several processes (GPUs or machines), each rank with its own envs and replay buffer and the gradients
averaged across ranks at every update (rank 0 alone writes the run folder; :mod:`agents.distributed`)::

    torchrun --nproc_per_node 2 -m agents.train_sac --distributed

Interrupting (Ctrl-C or SIGTERM) saves a checkpoint first; ``--resume RUN_DIR`` continues with the same step
count. Checkpoints and the model are written atomically (a temporary file renamed once complete), so a
SIGKILL at any moment loses at most the work since the last complete checkpoint (``--save-freq``).
"""

from __future__ import annotations

import argparse
import sys

from agents.cli import cli_main, device_name, float_range, int_range
from agents.experiment import run_style_sac

#: ``--image-size`` bounds: NSTEnv's smallest (relu4_* features are image_size/8 wide) and a side whose replay
#: buffer of a few thousand images already needs tens of GB.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 4096


def build_parser(description: str = __doc__.split("\n")[0]) -> argparse.ArgumentParser:
    """The training command line (shared with :mod:`agents.train`, which adds ``--algo``).

    :param description: the ``--help`` header.
    """
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
    p.add_argument("--n-envs", type=int_range(1, 256), default=None, help="parallel envs (SubprocVecEnv when > 1)")
    p.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--amp", action="store_true", help="mixed precision (float16 on CUDA, bfloat16 on CPU)")
    p.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0)
    p.add_argument("-f", "--log-folder", default="runs", help="where run folders are created")
    p.add_argument("--tensorboard-log", default=None, help="also log to TensorBoard in this folder")
    p.add_argument("--save-freq", type=int_range(0), default=500, help="checkpoint every N env steps (0: never)")
    p.add_argument("--eval-freq", type=int_range(0), default=500, help="evaluate every N env steps (0: never)")
    p.add_argument("--buffer-size", type=int_range(1), default=None, help="replay buffer capacity")
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
        help="override hyper-parameters, e.g. batch_size:16 policy_kwargs.actor_lr_ratio:0.2",
    )
    p.add_argument(
        "--init",
        default=None,
        help="start actor+builder from released weights: rlministyler, or rlnst:blue_swirls "
        "(fire, maxresdefault; selects RLNSTPolicy and, unless --style is given, its style)",
    )
    p.add_argument(
        "--resume", default=None, help="run folder or checkpoint zip to continue from (with -n: a new total step count)"
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
        default=300.0,
        help="seconds a distributed rank waits for the others (joining, each all-reduce) before ending with an "
        "error; longer than rank 0's evaluations and checkpoint saves",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("-v", "--verbose", type=int_range(0, 2), default=1)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``python -m agents.train_sac``'s arguments (:func:`build_parser`)."""
    return build_parser().parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m agents.train_sac``: parse the command line and train (:func:`agents.experiment.run_style_sac`);
    bad input ends it with a one-line error and exit status 2 (:func:`agents.cli.cli_main`)."""
    return run_style_sac(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
