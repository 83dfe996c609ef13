"""The explorer's Words & regions tab: which word of a text goes with which region of the image.

Press **Find interactions** to run an interaction method on the image and the text; click a word
to see its region; click two opposite corners on the image to draw a box and see its words. The
page ``vlexplain.app.app`` builds the tab and hands it the explorer's image reader, model cache and
error wrapper, so this module does not import the page that imports it.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .runner import ModelCache
from .widgets import _image_input, _model_choices, _model_label

INTRO = """Which word of the text goes with which region of the image? **1.** Upload an image or use
the one shown, type a text naming what it holds. **2.** Press **Find interactions**. **3.** Pick a
word to see its region (red: the regions whose presence raises the image-text cosine together with
that word), or click two opposite corners on the map to draw a box and list the words that go with it.
"""
DEFAULT_TEXT = "a cat lying on a wooden floor"


def method_choices(model: Any) -> list[str]:
    """The interaction methods that apply to ``model``."""
    from ..interactions.base import interaction_methods_for

    return [m for m, why in interaction_methods_for(model).items() if why is None]


@dataclass
class WordsRegions:
    """The tab's callbacks.

    Attributes:
        cache: the explorer's model cache.
        read_image: payload -> (PIL image, its name); an InputError for anything else.
        user_error: exception -> the page's one-line error.
    """

    cache: ModelCache
    read_image: Callable[[Any], Any]
    user_error: Callable[[Exception], Exception]

    def run(self, payload: Any, text: str, spec: str, method: str) -> tuple[Any, Any, np.ndarray, str, str]:
        """-> (state, the word menu, the first word's region image, the words of the whole image, status)."""
        import gradio as gr

        from ..interactions.api import interactions

        try:
            image = self.read_image(payload)
            text = " ".join(str(text or "").split())
            if not text:
                raise InputError("type a text naming what the image holds")
            model, lock = self.cache.get(spec)
            with lock:
                inter = interactions(model, image, text, method=method or "integrated_jacobians", seed=0)
            assert not isinstance(inter, list)
            words = [w for w, _, _ in inter.word_maps()]
            if not words:
                raise InputError(f"the text {text!r} has no content word to look for in the image")
        except Exception as e:
            raise self.user_error(e) from None
        state = {"inter": inter, "corner": None}
        status = f"{inter.method} on {model.name}: cosine {inter.score:.3f}, {inter.seconds:.1f} s. Pick a word or draw a box."
        full = (0, 0, inter.input_size[1], inter.input_size[0])
        return (
            state,
            gr.Radio(choices=words, value=words[0]),
            region_image(inter, words[0]),
            words_html(inter, full),
            status,
        )

    def pick_word(self, state: dict | None, word: str | None) -> np.ndarray | None:
        if not state or not word:
            return None
        return region_image(state["inter"], word)

    def click(self, state: dict | None, word: str | None, evt: Any) -> tuple[dict | None, np.ndarray | None, str]:
        """A click on the map: the first corner of a box, or the second (then its words)."""
        if not state:
            return state, None, "<p class='vx-note'>Press <b>Find interactions</b> first.</p>"
        inter = state["inter"]
        x, y = (int(v) for v in evt.index)
        if state["corner"] is None:
            state = {**state, "corner": (x, y)}
            return (
                state,
                region_image(inter, word, corner=(x, y)),
                "<p class='vx-note'>Now click the opposite corner.</p>",
            )
        (x0, y0), state = state["corner"], {**state, "corner": None}
        box = (min(x0, x), min(y0, y), max(x0, x) + 1, max(y0, y) + 1)
        return state, region_image(inter, word, box=box), words_html(inter, box)


def region_image(inter: Any, word: str | None, box: Any = None, corner: Any = None) -> np.ndarray:
    """(H, W, 3) uint8: the word's region over the image (or the image alone), with a box or corner drawn."""
    from ..viz.core import overlay

    rgb = inter.image_rgb().float().cpu()
    if word:
        out = overlay(rgb, inter.image_region(word).float().cpu())
    else:
        out = (rgb.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    out = np.ascontiguousarray(out[..., :3])
    if out.dtype != np.uint8:
        out = (np.clip(out, 0, 1) * 255).astype(np.uint8)
    if corner is not None:
        x, y = corner
        out[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3] = (255, 255, 255)
    if box is not None:
        x0, y0, x1, y1 = (int(v) for v in box)
        for ys, xs in ((slice(y0, y0 + 2), slice(x0, x1)), (slice(y1 - 2, y1), slice(x0, x1))):
            out[ys, xs] = (255, 255, 255)
        for ys, xs in ((slice(y0, y1), slice(x0, x0 + 2)), (slice(y0, y1), slice(x1 - 2, x1))):
            out[ys, xs] = (255, 255, 255)
    return out


def words_html(inter: Any, box: Any) -> str:
    """The content words ranked by their interaction with ``box`` (x0, y0, x1, y1 in input pixels)."""
    per_token = inter.words(box).float().cpu()
    rows = sorted(((float(per_token[idx].sum()), w) for w, idx, _ in inter.word_maps()), reverse=True)
    top = max((abs(v) for v, _ in rows), default=0.0) or 1.0
    body = "".join(
        f"<tr><td>{html.escape(w)}</td><td class='vx-score'>{v:+.4f}</td><td style='width:50%'><div style="
        f"'background:{'#d04a4a' if v > 0 else '#4a7bd0'};height:10px;width:{abs(v) / top * 100:.0f}%'></div></td></tr>"
        for v, w in rows
    )
    x0, y0, x1, y1 = box
    return (
        f"<p class='vx-note'>Words of the box ({x0}, {y0})\u2013({x1}, {y1}), strongest first "
        "(their interaction with it, in cosine units):</p>"
        f"<table class='vx-box-words'><thead><tr><th>word</th><th>interaction</th><th></th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _interactions_tab(gr, cb: WordsRegions, model: str, default_model: Any, image: Any, max_upload_mb: float) -> None:
    """The Words & regions tab (``default_model``: the loaded default model, for the method menu)."""
    methods = method_choices(default_model)
    gr.Markdown(INTRO, elem_id="vx-ix-intro")
    state = gr.State(None)
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            img = _image_input(gr, image, max_upload_mb, 260, "vx-ix-image")
            text = gr.Textbox(value=DEFAULT_TEXT, lines=2, label="Text", elem_id="vx-ix-text")
            spec = gr.Dropdown(
                choices=_model_choices(model, cb.cache.allowed),
                value=model,
                allow_custom_value=cb.cache.allowed is None,
                label=_model_label(cb.cache),
                elem_id="vx-ix-model",
            )
            method = gr.Dropdown(
                choices=methods,
                value="span_first_order" if "span_first_order" in methods else methods[0],
                label="Interaction method",
                elem_id="vx-ix-method",
            )
            run_btn = gr.Button("Find interactions", variant="primary", elem_id="vx-ix-run")
            status = gr.Markdown(elem_id="vx-ix-status")
        with gr.Column(scale=3, min_width=480):
            words = gr.Radio(choices=[], label="Words: pick one to see its region", elem_id="vx-ix-words")
            region = gr.Image(
                label="Region (click two corners to draw a box)",
                type="numpy",
                format="png",
                interactive=False,
                elem_id="vx-ix-region",
            )
            box_words = gr.HTML("", elem_id="vx-ix-box-words")
    run_btn.click(
        cb.run,
        inputs=[img, text, spec, method],
        outputs=[state, words, region, box_words, status],
        api_name="interactions",
        preprocess=False,
    )
    words.change(cb.pick_word, inputs=[state, words], outputs=region, api_name=False)

    def on_click(st, word, evt):
        return cb.click(st, word, evt)

    on_click.__annotations__["evt"] = gr.SelectData  # the class itself: gradio passes the click's data by it

    region.select(on_click, inputs=[state, words], outputs=[state, region, box_words], api_name=False)
