"""The web explorer (Gradio Blocks): one image, several texts, several methods.

Safe defaults: binds 127.0.0.1, limits upload size, accepts only images, serves no file from disk
beyond Gradio's own upload/output cache, analytics off, no share links.

Example:
    >>> from vlexplain.app.app import launch
    >>> launch(model="offline", port=7860)  # doctest: +SKIP
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import InputError, MethodError, VlexplainError, require
from .concept_runner import (
    MAX_DESCRIPTORS,
    concept_method_choices,
    concept_presets,
    parse_class,
    parse_descriptors,
    parse_templates,
    read_concept_file,
    run_concepts,
)
from .concepts_tab import _concepts_tab
from .runner import DEFAULT_MAX_MODELS, ModelCache, method_choices, method_options_help, parse_options, parse_texts, run
from .samples import concept_suggestions, sample_images
from .widgets import _image_input, _model_choices, _model_label

_LOG = logging.getLogger("vlexplain.app")

NOT_IMAGE = "That file is not an image vlexplain can read. Upload a PNG, JPEG, WebP, BMP, GIF or TIFF image."

TITLE = "# vlexplain explorer"

INTRO = """Which pixels and which words make an image and a text match?
**1.** Upload an image or pick a built-in photo. **2.** Type one or more texts, one per line.
**3.** Choose the model and the attribution methods, then press **Explain**.
Each heatmap shows the method's attribution for one text (red = high); the token table shows which
words matter; the score is the cosine similarity of the image and text embeddings.
"""

CSS = """
#vx-scores table, #vx-tokens table, #vx-c-metrics table {border-collapse: collapse; width: 100%; font-size: 0.95rem;}
#vx-scores td, #vx-scores th, #vx-tokens td, #vx-tokens th, #vx-c-metrics td, #vx-c-metrics th {border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left;}
#vx-c-metrics table {margin-bottom: 0.8rem;}
.vx-note {font-size: 0.85rem; color: #666;}
"""


def _gradio():
    return require("gradio", "app")


def _image_path(payload: Any) -> str | None:
    """The uploaded file's path from an image payload (events run with ``preprocess=False``).

    Gradio has already checked that the file lies in its upload cache; the image is decoded here,
    by ``vlexplain.images.load_image``, so that a non-image gets a clear message.
    """
    if payload is None:
        return None
    if isinstance(payload, dict):
        return payload.get("path")
    return str(payload)


def _decode(path: str):
    """Open an uploaded file as RGB, or raise InputError with a message fit for the page."""
    from ..images import MAX_PIXELS, load_image

    try:
        return load_image(path)
    except InputError as e:
        if "too large" in str(e):
            raise InputError(f"The image has too many pixels (the limit is {MAX_PIXELS:,}).") from None
        raise InputError(NOT_IMAGE) from None


def _user_error(e: Exception):
    """The page's message for an error; a user's error is logged as one line, anything else with its traceback."""
    gr = _gradio()
    if isinstance(e, VlexplainError):
        _LOG.warning("request refused: %s", str(e).partition("\n")[0])
        return gr.Error(str(e), duration=20, print_exception=False)
    return gr.Error(f"{type(e).__name__}: {e}", duration=20)


class Explorer:
    """The explorer's callbacks, sharing one ``ModelCache`` and one output folder."""

    def __init__(self, cache: ModelCache):
        self.cache = cache
        self.samples = sample_images()
        self.concept_samples = concept_suggestions()
        self.presets = concept_presets()
        self._out = tempfile.TemporaryDirectory(prefix="vlexplain-serve-")

    def check_upload(self, payload: Any) -> str:
        """Decode an uploaded image fully; a clear message if it is not an image."""
        path = _image_path(payload)
        if not path:
            return ""
        try:
            im = _decode(path)
        except InputError as e:
            raise _user_error(e) from None
        return f"Image ready: {im.width} × {im.height} pixels."

    def pick_sample(self, label: str | None):
        gr = _gradio()
        if not label or label not in self.samples:
            return gr.skip(), gr.skip(), ""
        image, texts = self.samples[label]()
        return image, texts, f"Loaded the built-in image '{label}'."

    def change_model(self, spec: str, selected: list[str] | None, progress: Any = None):
        gr = _gradio()
        try:
            if progress is not None and spec not in self.cache:
                progress(0, desc=f"loading {spec}")
            model, _ = self.cache.get(spec)
        except Exception as e:  # keep the page usable: the message goes to the status line
            first, _, rest = str(_user_error(e).message).partition("\n")
            detail = f"\n```\n{rest}\n```" if rest.strip() else ""
            return gr.skip(), gr.skip(), f"**Cannot load model `{spec}`**: {first}{detail}"
        choices = method_choices(model)
        names = [n for _, n in choices]
        keep = [m for m in (selected or []) if m in names] or names[:1]
        return (
            gr.CheckboxGroup(choices=choices, value=keep),
            method_options_help(names),
            f"Model **{model.name}** ready: {len(names)} methods apply.",
        )

    def explain(self, payload, texts_raw, spec, methods, options_raw, seed, progress: Any = None):
        """Run every method on the image against every text; return the page's outputs."""
        from .render import grid_png, scores_html, tokens_html, write_json

        try:
            path = _image_path(payload)
            if not path:
                raise InputError("upload an image or pick a built-in photo first")
            image = _decode(path)
            texts = parse_texts(texts_raw)
            methods = list(methods or [])
            if not methods:
                raise MethodError("choose at least one method")
            if progress is not None and spec not in self.cache:
                progress(0, desc=f"loading {spec}")
            model, lock = self.cache.get(spec)
            applicable = {n for _, n in method_choices(model)}
            bad = [m for m in methods if m not in applicable]
            if bad:
                raise MethodError(
                    f"{', '.join(bad)} does not apply to {model.name}; choose from {', '.join(sorted(applicable))}"
                )
            options = parse_options(options_raw, methods)
            try:
                seed = int(float(seed or 0))
            except (TypeError, ValueError):
                raise InputError(f"the seed must be a whole number, got {seed!r}") from None

            def report(k: int, n: int, desc: str) -> None:
                if progress is not None:
                    progress((k, n), desc=desc)

            t0 = time.perf_counter()
            if lock.locked():
                report(0, len(methods), "waiting: another request is using this model")
            with lock:
                res = run(model, image, texts, methods, options, seed=seed, image_name=Path(path).name, progress=report)
            out = Path(tempfile.mkdtemp(dir=self._out.name))
            grid = grid_png(res, out / "vlexplain_grid.png")
            js = write_json(res, out / "vlexplain_results.json")
        except Exception as e:
            raise _user_error(e) from None
        dt = time.perf_counter() - t0
        status = f"Done: {len(texts)} text(s) × {len(methods)} method(s) in {dt:.1f} s on {model.name}."
        return scores_html(res), grid, tokens_html(res), [str(out / "vlexplain_grid.png"), str(js)], status

    # --- the concepts tab ------------------------------------------------------------------------

    def pick_concept_sample(self, label: str | None):
        """A built-in image with its suggested class, descriptors and prompt templates."""
        gr = _gradio()
        if not label or label not in self.samples:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), ""
        image, _ = self.samples[label]()
        cls, descs, tpl = self.concept_samples[label]()
        return (
            image,
            cls,
            "\n".join(descs),
            tpl.category,
            tpl.concept,
            f"Loaded the built-in image '{label}' with a suggested class and descriptors "
            f"(prompts `{tpl.category}` and `{tpl.concept}`).",
        )

    def _concept_set(self, label: str | None, uploaded: dict | None):
        """(concept set, its prompt templates) for a menu label, or (None, None)."""
        from ..concepts.relevance import Templates
        from ..concepts.sets import ConceptSet

        if label in self.presets:
            load, tpl = self.presets[label]
            return load(), tpl
        if uploaded and label == uploaded.get("label"):
            return ConceptSet({c: tuple(d) for c, d in uploaded["concepts"].items()}, uploaded["name"]), Templates()
        return None, None

    def upload_concepts(self, payload: Any, uploaded: dict | None):
        """Read an uploaded concept file; select it, offer its classes and clear the upload box for the next file."""
        gr = _gradio()
        path = _image_path(payload)
        if not path:
            return gr.skip(), gr.skip(), uploaded, gr.skip(), ""
        name = (payload.get("orig_name") if isinstance(payload, dict) else None) or Path(path).name
        try:
            cs = read_concept_file(path, Path(name).name)
        except InputError as e:
            raise _user_error(e) from None
        label = f"uploaded: {cs.source}"
        state = {"label": label, "name": cs.source, "concepts": {c: list(d) for c, d in cs.concepts.items()}}
        lo, hi = cs.num_descriptors()
        per = f"{lo}" if lo == hi else f"{lo}–{hi}"
        return (
            gr.Dropdown(choices=[*self.presets, label], value=label),
            gr.Dropdown(choices=cs.classes, value=None),
            state,
            None,
            f"Read {len(cs)} classes ({per} descriptors each) from {cs.source}: pick a class.",
        )

    def pick_concept_set(self, label: str | None, uploaded: dict | None):
        """Offer the classes of the chosen concept set."""
        gr = _gradio()
        cs, _ = self._concept_set(label, uploaded)
        if cs is None:
            return gr.Dropdown(choices=[], value=None), ""
        return gr.Dropdown(choices=cs.classes, value=None), f"{label}: {len(cs)} classes; pick one."

    def pick_concept_class(self, label: str | None, cls: str | None, uploaded: dict | None):
        """Fill the class, descriptor (at most MAX_DESCRIPTORS) and prompt boxes from the chosen set."""
        gr = _gradio()
        if not cls:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), ""
        cs, tpl = self._concept_set(label, uploaded)
        if cs is None:
            raise _user_error(InputError("choose a concept set first (or upload a concept file)"))
        try:
            descs = cs.descriptors(cls)
        except InputError as e:
            raise _user_error(e) from None
        note = f" (the first {MAX_DESCRIPTORS} of its {len(descs)})" if len(descs) > MAX_DESCRIPTORS else ""
        descs = descs[:MAX_DESCRIPTORS]
        return (
            cls,
            "\n".join(descs),
            tpl.category,
            tpl.concept,
            f"'{cls}': {len(descs)} descriptors from {cs.source}{note}; prompts `{tpl.category}` and `{tpl.concept}`.",
        )

    def change_concept_model(self, spec: str, method: str | None, progress: Any = None):
        """Load the model and offer the concept-map methods that apply to it."""
        gr = _gradio()
        try:
            if progress is not None and spec not in self.cache:
                progress(0, desc=f"loading {spec}")
            model, _ = self.cache.get(spec)
        except Exception as e:
            first = str(_user_error(e).message).partition("\n")[0]
            return gr.skip(), f"**Cannot load model `{spec}`**: {first}"
        choices = concept_method_choices(model)
        names = [n for _, n in choices]
        return gr.Dropdown(
            choices=choices, value=method if method in names else names[0]
        ), f"Model **{model.name}** ready."

    def explain_concepts(
        self, payload, spec, method, cls_raw, descs_raw, options_raw, category_tpl, concept_tpl, progress: Any = None
    ):
        """Category and concept maps of the image, with its disentanglability and localizability."""
        from .render import concept_metrics_html, concept_png, write_concept_json

        try:
            path = _image_path(payload)
            if not path:
                raise InputError("upload an image or pick a built-in one first")
            image = _decode(path)
            cls = parse_class(cls_raw)
            descriptors = parse_descriptors(descs_raw, cls)
            templates = parse_templates(category_tpl, concept_tpl)
            method = (method or "").strip() or "deal"
            options = parse_options(options_raw, [method]).get(method, {})
            if progress is not None and spec not in self.cache:
                progress(0, desc=f"loading {spec}")
            model, lock = self.cache.get(spec)
            if progress is not None:
                progress(
                    0.1, desc="waiting for the model" if lock.locked() else f"{method}: {1 + len(descriptors)} maps"
                )
            with lock:
                res = run_concepts(
                    model, image, cls, descriptors, method, options, templates, image_name=Path(path).name
                )
            out = Path(tempfile.mkdtemp(dir=self._out.name))
            fig = concept_png(res, out / "vlexplain_concepts.png")
            js = write_concept_json(res, out / "vlexplain_concepts.json")
        except Exception as e:
            raise _user_error(e) from None
        status = f"Done: '{cls}' with {len(descriptors)} concept(s) by {method} in {res.seconds:.1f} s on {model.name}."
        return fig, concept_metrics_html(res), [str(out / "vlexplain_concepts.png"), str(js)], status


def build_app(model: str = "offline", max_upload_mb: float = 10, cache: ModelCache | None = None):
    """Build the explorer's Blocks: the Explain and Concepts tabs (the default model is loaded here).

    The model menus offer the cache's allowed specs when it has a list, else the built-in models
    and any spec typed in.
    """
    gr = _gradio()
    cache = cache or ModelCache()
    if cache.allowed is not None and model.strip() not in cache.allowed:
        raise InputError(f"the default model {model!r} is not among the allowed models ({', '.join(cache.allowed)})")
    ex = Explorer(cache)
    default_model, _ = cache.get(model)
    choices = method_choices(default_model)
    names = [n for _, n in choices]
    first_sample = next(iter(ex.samples))
    first_image, first_texts = ex.samples[first_sample]()

    def on_model(spec, selected, progress=gr.Progress()):
        return ex.change_model(spec, selected, progress)

    def on_run(path, texts_raw, spec, methods, options_raw, seed, progress=gr.Progress()):
        return ex.explain(path, texts_raw, spec, methods, options_raw, seed, progress)

    with gr.Blocks(title="vlexplain explorer", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(TITLE, elem_id="vx-title")
        with gr.Tab("Explain", id="explain", elem_id="vx-tab-explain"):
            gr.Markdown(INTRO, elem_id="vx-intro")
            with gr.Row():
                with gr.Column(scale=2, min_width=320):
                    image = _image_input(gr, first_image, max_upload_mb, 280, "vx-image")
                    sample = gr.Dropdown(
                        choices=list(ex.samples),
                        value=first_sample,
                        label="…or pick a built-in image",
                        elem_id="vx-sample",
                    )
                    texts = gr.Textbox(
                        value=first_texts, lines=4, max_lines=8, label="Texts (one per line)", elem_id="vx-texts"
                    )
                    model_box = gr.Dropdown(
                        choices=_model_choices(model, cache.allowed),
                        value=model,
                        allow_custom_value=cache.allowed is None,
                        label=_model_label(cache),
                        elem_id="vx-model",
                    )
                    methods = gr.CheckboxGroup(
                        choices=choices,
                        value=["m2ib"] if "m2ib" in names else names[:1],
                        label="Methods (those that apply to this model)",
                        elem_id="vx-methods",
                    )
                    run_btn = gr.Button("Explain", variant="primary", elem_id="vx-run")
                    status = gr.Markdown(elem_id="vx-status")
                    with gr.Accordion("Method options and seed", open=False):
                        options = gr.Textbox(
                            lines=3,
                            label="Options: method.option=value, one per line",
                            placeholder="m2ib.steps=5\nm2ib.beta=0.1",
                            elem_id="vx-options",
                        )
                        seed = gr.Number(value=0, precision=0, label="Seed (stochastic methods)", elem_id="vx-seed")
                    with gr.Accordion("What the methods do", open=False):
                        opts_help = gr.Markdown(method_options_help(names), elem_id="vx-options-help")
                with gr.Column(scale=3, min_width=480):
                    gr.Markdown("### Scores")
                    scores = gr.HTML(
                        "<p class='vx-note'>Press <b>Explain</b>: each text's score appears here.</p>",
                        elem_id="vx-scores",
                    )
                    gr.Markdown("### Heatmaps\nOne row per text, one column per method (its run time in brackets).")
                    grid = gr.Image(
                        label="Heatmaps",
                        show_label=False,
                        type="numpy",
                        format="png",
                        interactive=False,
                        elem_id="vx-grid",
                    )
                    gr.Markdown("### Token highlights")
                    tokens = gr.HTML(
                        "<p class='vx-note'>Which words matter, per text and method.</p>", elem_id="vx-tokens"
                    )
                    files = gr.File(
                        label="Download: grid (PNG) and results (JSON)",
                        file_count="multiple",
                        interactive=False,
                        elem_id="vx-download",
                    )
            # preprocess=False: the callbacks decode the image themselves (clear message for non-images)
            image.upload(ex.check_upload, inputs=image, outputs=status, api_name=False, preprocess=False)
            sample.input(ex.pick_sample, inputs=sample, outputs=[image, texts, status], api_name=False)
            model_box.change(
                on_model, inputs=[model_box, methods], outputs=[methods, opts_help, status], api_name=False
            )
            run_btn.click(
                on_run,
                inputs=[image, texts, model_box, methods, options, seed],
                outputs=[scores, grid, tokens, files, status],
                api_name="explain",
                preprocess=False,
            )
        with gr.Tab("Concepts", id="concepts", elem_id="vx-tab-concepts"):
            _concepts_tab(gr, ex, model, default_model, max_upload_mb)
    demo.vx_explorer = ex  # keeps the output folder alive as long as the app
    return demo


def launch(
    model: str = "offline",
    host: str = "127.0.0.1",
    port: int = 7860,
    max_upload_mb: float = 10,
    concurrency: int = 2,
    max_queue: int = 32,
    quiet: bool = False,
    models: list[str] | None = None,
    max_models: int = DEFAULT_MAX_MODELS,
) -> None:
    """Build and serve the explorer with safe settings (blocks until interrupted).

    Args:
        models: the only model specs clients may choose (None: any spec on a loopback address;
            on any other address only ``model``, so that no client can make the server load
            arbitrary models).
        max_models: the most models kept loaded at once (least recently used dropped first).
    """
    if max_upload_mb <= 0:
        raise InputError("--max-upload-mb must be positive")
    if concurrency < 1:
        raise InputError("--concurrency must be at least 1")
    if models is None and not is_loopback(host):
        models = [model]
    cache = ModelCache(max_models=max_models, allowed=models)
    demo = build_app(model, max_upload_mb, cache)
    demo.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    try:
        _serve(demo, host, port, max_upload_mb, quiet)
    except OSError as e:  # the port is taken, the address is not this machine's
        raise InputError(f"cannot serve on {host}:{port}: {e}; choose another --port or --host") from None


def _serve(demo: Any, host: str, port: int, max_upload_mb: float, quiet: bool) -> None:
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        max_file_size=int(max_upload_mb * 1024 * 1024),
        allowed_paths=None,
        show_error=False,
        quiet=quiet,
        css=CSS,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        enable_monitoring=False,
        inbrowser=False,
        run_history=False,
        footer_links=["api", "settings"],
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    h = host.strip().strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False
