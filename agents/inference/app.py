"""The step slider in the browser (``python -m agents.app``, :mod:`agents.cli.app`): one click stylises a photo
step by step (:mod:`agents.inference.sequences`), then a slider shows any step of the stored sequence, beside the
photo and the painting, with a strip of all steps, the per-step style loss and SSIM, and the downloads.

:func:`build_app` lays out the Gradio page; each session keeps its own sequence (``gr.State``) and folder. A bad
input is one message in the page's status line and the page stays usable. Gradio (the ``app`` extra) is imported
inside the functions only, so this module imports without it. Controls and the processing-size cap: docs/app.md.
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.errors import one_line
from agents.inference.models import DEFAULT_MODEL, RELEASED
from agents.inference.quality import StepQuality
from agents.inference.sequences import (
    DEFAULT_STEPS,
    MAX_PHOTO_SIDE,
    MAX_STEPS,
    SIZE_CAP,
    ModelCache,
    StepSequence,
    read_image,
    run_request,
    upload_path,
)
from nst_env.images import IMAGE_SUFFIXES, SAMPLE_CONTENT_DIR, SAMPLE_STYLE_DIR, ImageReadError

#: Largest upload the page takes (Gradio's ``max_file_size``).
MAX_FILE_SIZE = "50mb"


def sample_images(folder: Path) -> list[str]:
    """The built-in images of ``folder`` (for the page's examples).

    :param folder: :data:`~nst_env.images.SAMPLE_CONTENT_DIR` or :data:`~nst_env.images.SAMPLE_STYLE_DIR`.
    """
    return [str(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]


def _theme_in_launch() -> bool:
    import gradio as gr

    return "theme" in inspect.signature(gr.Blocks.launch).parameters


def page_theme() -> Any:
    """Gradio's default theme with the system's fonts, so that the page fetches no web font."""
    import gradio as gr

    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "Consolas", "monospace"]
    )


def build_app(
    models: ModelCache,
    quality: StepQuality | None = None,
    extra_models: Sequence[str] = (),
    allow_paths: bool = True,
    work_dir: Path | None = None,
) -> Any:
    """The page as a ``gradio.Blocks`` (launch it with :func:`launch_app`).

    :param models: the runners (:class:`ModelCache`); the page offers :data:`~agents.inference.models.RELEASED`.
    :param quality: what scores the steps for the curves (``None``: a :class:`StepQuality` on the models' device).
    :param extra_models: model files to offer in the drop-down besides the shipped models.
    :param allow_paths: let the drop-down take a model file's path typed in (off where the page is served to
        others: a typed path opens a file on this machine).
    :param work_dir: where the sessions' folders go (default: a new temporary folder).
    :raises ImportError: Gradio is not installed (``pip install "rl-nst[app]"``).
    """
    import gradio as gr
    import pandas as pd

    quality = quality or StepQuality(models.device)
    base = Path(work_dir or tempfile.mkdtemp(prefix="rl-nst-app-"))
    base.mkdir(parents=True, exist_ok=True)
    choices = [*RELEASED, *extra_models]

    def curves(sequence: StepSequence) -> tuple[Any, Any]:
        frame = pd.DataFrame(
            {
                "step": [s.step for s in sequence.scores],
                "style loss": [s.style_loss for s in sequence.scores],
                "SSIM": [s.ssim for s in sequence.scores],
            }
        )
        return frame[["step", "style loss"]].dropna(), frame[["step", "SSIM"]].dropna()

    def step_views(sequence: StepSequence, k: int) -> tuple[Any, Any]:
        n = len(sequence.steps)
        k = min(max(int(k), 1), n)
        width, height = sequence.size
        return (
            gr.Image(value=str(sequence.steps[k - 1]), label=f"Step {k} of {n}"),
            gr.DownloadButton(value=str(sequence.steps[k - 1]), label=f"Step {k} ({width}x{height} PNG)"),
        )

    def check_upload(payload: Any, what: str) -> str:
        upload = upload_path(payload)
        if upload is None:
            return ""
        try:
            image, notes = read_image(upload[0], upload[1], what, shrink_above=MAX_PHOTO_SIDE)
        except ImageReadError as exc:
            return f"**Error:** {one_line(exc)}"
        return " ".join([f"The {what} {upload[1]} is {image.shape[1]}x{image.shape[0]}.", *notes])

    tracker = gr.Progress()  # Gradio fills in the progress bar by this default

    def run(
        photo: Any,
        style: Any,
        model: Any,
        model_file: Any,
        steps: Any,
        size: Any,
        previous: StepSequence | None,
        progress: Any = tracker,
    ) -> tuple[Any, ...]:
        sequence, message = run_request(
            models,
            base,
            photo,
            style,
            model,
            model_file,
            steps,
            size,
            None,  # scored by the next event (score), once the steps are on the page
            allow_paths,
            lambda fraction, text: progress(fraction, desc=text),
        )
        if sequence is None:  # the message names the problem; the previous sequence stays on the page
            return (gr.skip(), message, *(gr.skip(),) * 8)
        if previous is not None:
            previous.remove()
        n = len(sequence.steps)
        image, step_download = step_views(sequence, n)
        return (
            sequence,
            message,
            str(sequence.photo),
            None if sequence.painting is None else str(sequence.painting),
            image,
            gr.Slider(  # a slider needs two ends: one step leaves it fixed
                minimum=1, maximum=max(n, 2), value=n, step=1, interactive=n > 1, label=f"Step (1 to {n})"
            ),
            step_download,
            gr.DownloadButton(value=str(sequence.strip), label=f"Strip of {n} steps (PNG)"),
            gr.DownloadButton(value=str(sequence.gif), label="Animation (GIF)"),
            gr.Gallery(value=[(str(p), f"step {k}") for k, p in enumerate(sequence.thumbnails, 1)], columns=min(n, 10)),
        )

    def score(sequence: StepSequence | None, progress: Any = tracker) -> tuple[Any, Any]:
        if sequence is None:
            return gr.skip(), gr.skip()
        sequence.score(quality, lambda fraction, text: progress(fraction, desc=text))
        return curves(sequence)

    def show_step(k: Any, sequence: StepSequence | None) -> tuple[Any, Any]:
        if sequence is None:
            return gr.skip(), gr.skip()
        return step_views(sequence, k)

    def pick(sequence: StepSequence | None, evt: Any) -> Any:
        return gr.skip() if sequence is None else evt.index + 1

    pick.__annotations__["evt"] = gr.SelectData  # Gradio passes the event by this type (a class, not a string)

    blocks_options: dict[str, Any] = {} if _theme_in_launch() else {"theme": page_theme()}
    with gr.Blocks(
        title="rl-nst: step-wise style transfer", analytics_enabled=False, delete_cache=(3600, 3600), **blocks_options
    ) as page:
        sequence_state = gr.State(None, delete_callback=lambda sequence: sequence and sequence.remove())
        gr.Markdown(
            "# Step-wise style transfer\nChoose a photo and a painting and press **Stylise**: the whole sequence is "
            "computed once, then the slider shows any step. Early steps keep the photo, later ones paint more."
        )
        with gr.Row():
            with gr.Column():
                photo_in = gr.Image(
                    label="Photo",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard", "webcam"],
                    elem_id="photo-input",
                    height=260,
                )
                gr.Examples(sample_images(SAMPLE_CONTENT_DIR), inputs=[photo_in], label="Sample photos")
            with gr.Column():
                style_in = gr.Image(
                    label="Painting (style)",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    elem_id="style-input",
                    height=260,
                )
                gr.Examples(sample_images(SAMPLE_STYLE_DIR), inputs=[style_in], label="Sample paintings")
            with gr.Column():
                model_in = gr.Dropdown(
                    choices,
                    value=DEFAULT_MODEL,
                    label="Model",
                    allow_custom_value=allow_paths,
                    info="rlnst:* paint their own style" + (", or type a model.zip's path" if allow_paths else ""),
                    elem_id="model",
                )
                model_file = gr.File(label="…or upload a trained model.zip", file_types=[".zip"])
                steps_in = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS, step=1, label="Steps", elem_id="steps")
                size_in = gr.Number(
                    value=0,
                    precision=0,
                    minimum=0,
                    maximum=MAX_PHOTO_SIDE,
                    label="Processing size (px, longer side)",
                    info=f"0: the photo's own, at most {SIZE_CAP} px; larger is slower",
                    elem_id="size",
                )
                run_button = gr.Button("Stylise", variant="primary", elem_id="run")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            photo_view = gr.Image(label="Photo", interactive=False, elem_id="photo-view", height=340)
            painting_view = gr.Image(label="Painting", interactive=False, elem_id="painting-view", height=340)
            step_view = gr.Image(label="Step", interactive=False, elem_id="step-view", height=340)
        step_slider = gr.Slider(1, DEFAULT_STEPS, value=1, step=1, label="Step", interactive=False, elem_id="step")
        with gr.Row():
            step_download = gr.DownloadButton("Step (PNG)", elem_id="download-step")
            strip_download = gr.DownloadButton("Strip (PNG)", elem_id="download-strip")
            gif_download = gr.DownloadButton("Animation (GIF)", elem_id="download-gif")
        gallery = gr.Gallery(
            label="All steps (click one to show it)",
            columns=10,
            height=200,
            allow_preview=False,
            object_fit="contain",
            elem_id="gallery",
        )
        with gr.Row():
            style_plot = gr.LinePlot(
                x="step", y="style loss", title="Style loss (lower: more of the painting)", elem_id="style-curve"
            )
            ssim_plot = gr.LinePlot(x="step", y="SSIM", title="SSIM (higher: more of the photo)", elem_id="ssim-curve")

        photo_in.upload(lambda p: check_upload(p, "photo"), photo_in, status, preprocess=False, show_progress="hidden")
        style_in.upload(
            lambda p: check_upload(p, "painting"), style_in, status, preprocess=False, show_progress="hidden"
        )
        run_button.click(
            run,
            [photo_in, style_in, model_in, model_file, steps_in, size_in, sequence_state],
            [
                sequence_state,
                status,
                photo_view,
                painting_view,
                step_view,
                step_slider,
                step_download,
                strip_download,
                gif_download,
                gallery,
            ],
            preprocess=False,
            concurrency_limit=1,
            concurrency_id="stylise",
        ).then(score, sequence_state, [style_plot, ssim_plot], concurrency_limit=1, concurrency_id="stylise")
        step_slider.change(show_step, [step_slider, sequence_state], [step_view, step_download], show_progress="hidden")
        gallery.select(pick, sequence_state, step_slider, show_progress="hidden")
    return page


def launch_app(
    page: Any,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    max_file_size: str = MAX_FILE_SIZE,
    block: bool = True,
) -> Any:
    """Serve the page (Gradio's ``launch``) with no analytics, no web fonts and a cap on uploads.

    :param page: :func:`build_app`'s page.
    :param host: the address to bind (``127.0.0.1``: this machine only).
    :param port: the port (``None``: Gradio's first free one from 7860).
    :param share: also serve it through a public Gradio share link.
    :param max_file_size: the largest upload, e.g. ``"50mb"``.
    :param block: wait until the server stops (``False``: return once it runs, e.g. in tests).
    :return: what ``launch`` returns (the FastAPI app, the local and the share URL).
    """
    options: dict[str, Any] = {"theme": page_theme()} if _theme_in_launch() else {}
    return page.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=max_file_size,
        prevent_thread_lock=not block,
        show_error=False,
        inbrowser=False,
        ssr_mode=False,
        **options,
    )


__all__ = ["MAX_FILE_SIZE", "build_app", "launch_app", "page_theme", "sample_images"]
