"""End to end: ``python -m agents.train_sac`` (run folder, resume, interruption) and ``agents.stylize``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from agents import StyleSAC
from agents.cli import stylize, train_sac
from benchmarks import training_report

FAST = [
    "--image-size",
    "32",
    "--no-progress",
    "-v",
    "0",
    "--hyperparams",
    "learning_starts:8",
    "batch_size:4",
    "buffer_size:100",
]


def test_train_sac_writes_a_complete_run_folder(tmp_path: Path) -> None:
    code = train_sac.main(["-n", "24", "-f", str(tmp_path), "--save-freq", "10", "--eval-freq", "12", *FAST])
    assert code == 0
    run = tmp_path / "style_sac_NST-v0_1"
    config = yaml.safe_load((run / "config.yml").read_text())
    assert config["n_timesteps"] == 24 and config["env_kwargs"]["image_size"] == 32 and config["batch_size"] == 4
    assert (run / "monitor" / "0.monitor.csv").is_file()
    assert "train/critic_loss" in (run / "logs" / "progress.csv").read_text().splitlines()[0]
    assert sorted(p.name for p in (run / "checkpoints").glob("*.zip")) == [
        "rl_model_10_steps.zip",
        "rl_model_20_steps.zip",
    ]
    buffers = sorted(p.name for p in (run / "checkpoints").glob("*.pkl"))
    assert buffers == ["replay_buffer_10_steps.pkl", "replay_buffer_20_steps.pkl"]  # one per checkpoint
    assert (run / "eval" / "evaluations.npz").is_file()
    picture = Image.open(run / "sequence.png")
    assert picture.size == (12 * 128, 3 * 128)  # content | style | 10 steps, 3 evaluation pairs
    model = StyleSAC.load(run / "model.zip", device="cpu", buffer_size=1)
    assert model.num_timesteps == 24

    # Resume from the first checkpoint: the step count continues where it stopped.
    code = train_sac.main(
        ["--resume", str(run / "checkpoints" / "rl_model_10_steps.zip"), "--no-progress", "-v", "0", "--eval-freq", "0"]
    )
    assert code == 0
    assert StyleSAC.load(run / "model.zip", device="cpu", buffer_size=1).num_timesteps == 24

    # The run's learning curves and its step-wise table beside the released model.
    assert training_report.main([str(run), "--image-size", "32", "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "style_sac_NST-v0_1_curves.png").is_file()
    steps = pd.read_csv(tmp_path / "report" / "style_sac_NST-v0_1_stepwise.csv")
    assert set(steps["model"]) == {"ours", "released", "photo"} and set(steps["step"]) == set(range(1, 11))
    means = steps.groupby(["model", "step"])[["style_loss", "content_loss"]].mean()
    released, photo = means.loc["released"], means.loc["photo"]
    assert released["style_loss"][10] < released["style_loss"][1] < photo["style_loss"][1]
    assert released["content_loss"][10] > released["content_loss"][1] > photo["content_loss"][1]
    assert photo["content_loss"].abs().max() < 1e-6  # the unchanged photo is its own content


def test_sigterm_saves_a_checkpoint_and_resume_continues(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "agents.train_sac",
        "-n",
        "100000",
        "-f",
        str(tmp_path),
        "--save-freq",
        "1000",
        "--eval-freq",
        "0",
        *FAST,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = tmp_path / "style_sac_NST-v0_1"
    deadline = time.time() + 120
    monitor = run / "monitor" / "0.monitor.csv"
    while time.time() < deadline and (not monitor.is_file() or len(monitor.read_text().splitlines()) < 3):
        time.sleep(0.5)  # wait for the first finished episode (10 steps)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    saved = list((run / "checkpoints").glob("rl_model_*_steps.zip"))
    assert len(saved) == 1 and "Interrupted at step" in out
    steps = int(saved[0].stem.split("_")[2])
    assert steps > 8
    code = train_sac.main(["--resume", str(run), "-n", str(steps + 6), "--no-progress", "-v", "0", "--eval-freq", "0"])
    assert code == 0
    assert StyleSAC.load(run / "model.zip", device="cpu", buffer_size=1).num_timesteps == steps + 6


def test_resume_keeps_the_saved_settings_and_a_flag_given_again_wins(tmp_path: Path, capsys) -> None:
    assert train_sac.main(["-n", "12", "-f", str(tmp_path), "--save-freq", "6", "--eval-freq", "0", *FAST]) == 0
    run = tmp_path / "style_sac_NST-v0_1"
    settings = yaml.safe_load((run / "args.yml").read_text())  # the run's own settings, beside config.yml
    assert settings["save_freq"] == 6 and settings["eval_freq"] == 0 and settings["progress"] is False
    assert "save_freq" not in yaml.safe_load((run / "config.yml").read_text())  # hyper-parameters only
    # Resumed without the flags: the saved settings hold (a checkpoint every 6 steps, no evaluation, quiet).
    assert train_sac.main(["--resume", str(run), "-n", "18"]) == 0
    assert (run / "checkpoints" / "rl_model_18_steps.zip").is_file() and not (run / "eval").exists()
    # A setting given again wins and says so; a hyper-parameter flag cannot change a resumed run.
    capsys.readouterr()
    assert train_sac.main(["--resume", str(run), "-n", "26", "--save-freq", "4", "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "note: save_freq 4 from the command line replaces the run's saved 6." in out
    assert "--image-size ignored" in out
    assert yaml.safe_load((run / "args.yml").read_text())["save_freq"] == 4
    assert (run / "checkpoints" / "rl_model_22_steps.zip").is_file()  # 18 + 4
    assert yaml.safe_load((run / "config.yml").read_text())["env_kwargs"]["image_size"] == 32


def test_bad_hyperparameter_syntax_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="KEY:VALUE"):
        train_sac.main(["-f", str(tmp_path), "--hyperparams", "batch_size=4"])


def test_stylize_default_model_writes_steps_strip_and_gif(tmp_path: Path) -> None:
    content = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(content)
    code = stylize.main(
        [
            "--content",
            str(content),
            "--style",
            "starry_night",
            "--steps",
            "3",
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [
        "photo__starry_night.gif",
        "photo__starry_night_step01.png",
        "photo__starry_night_step02.png",
        "photo__starry_night_step03.png",
        "photo__starry_night_strip.png",
    ]
    assert Image.open(tmp_path / "out" / "photo__starry_night_step02.png").size == (53, 37)
    assert Image.open(tmp_path / "out" / "photo__starry_night_strip.png").size == (3 * 53, 37)
    assert Image.open(tmp_path / "out" / "photo__starry_night.gif").n_frames == 3


def test_stylize_folders_process_every_pair_with_a_memory_bound(tmp_path: Path, capsys) -> None:
    contents, styles = tmp_path / "c", tmp_path / "s"
    contents.mkdir(), styles.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(contents / f"c{i}.png")
        Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(styles / f"s{i}.jpg")
    code = stylize.main(
        [
            "--content",
            str(contents),
            "--style",
            str(styles),
            "--steps",
            "1",
            "--out",
            str(tmp_path / "o"),
            "--max-side",
            "16",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert len(list((tmp_path / "o").glob("*_strip.png"))) == 4
    assert "processed at 16x16" in capsys.readouterr().out
    assert Image.open(tmp_path / "o" / "c0__s1_step01.png").size == (24, 24)


@pytest.mark.parametrize(
    "model, message",
    [("missing.zip", "Model not found"), ("garbage", "not a zip archive"), ("notsac", "Could not load")],
)
def test_stylize_bad_models_give_clear_errors(tmp_path: Path, capsys, model: str, message: str) -> None:
    (tmp_path / "garbage").write_bytes(b"\x00not a model")
    import zipfile

    with zipfile.ZipFile(tmp_path / "notsac", "w") as zf:
        zf.writestr("data", "{}")
    with pytest.raises(SystemExit) as exit_info:
        stylize.main(
            [
                "--model",
                str(tmp_path / model),
                "--content",
                "chelsea",
                "--style",
                "starry_night",
                "--out",
                str(tmp_path / "o"),
                "--device",
                "cpu",
            ]
        )
    assert exit_info.value.code == 2 and not (tmp_path / "o").exists()
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_stylize_unreadable_image_is_reported_not_raised(tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(SystemExit) as exit_info:
        stylize.main(
            [
                "--content",
                str(broken),
                "--style",
                "starry_night",
                "--steps",
                "1",
                "--out",
                str(tmp_path / "o"),
                "--device",
                "cpu",
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Cannot read image" in err and len(err.strip().splitlines()) == 1


def test_console_entry_point_help_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agents.train_sac", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ},
        check=True,
    ).stdout
    for flag in ("--n-timesteps", "--image-size", "--hyperparams", "--resume", "--init", "--tensorboard-log"):
        assert flag in out
