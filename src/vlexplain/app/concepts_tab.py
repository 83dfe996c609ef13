"""The explorer's Concepts tab (``_concepts_tab``); ``vlexplain.app.app`` builds the page with it.

The tab reaches the explorer's state and callbacks through ``ConceptCallbacks`` (which
``vlexplain.app.app.Explorer`` provides), so this module does not import the page that imports it.
"""

from __future__ import annotations

from typing import Any, Protocol

from .concept_runner import CONCEPT_FILE_TYPES, MAX_DESCRIPTORS, concept_method_choices
from .runner import ModelCache
from .widgets import _image_input, _model_choices, _model_label

CONCEPTS_INTRO = """Which pixels does each visual concept of a class rest on? (DEAL concept explanations.)
**1.** Upload an image or pick a built-in one. **2.** Type a class and its descriptors, one per line,
or pick a class from a concept set: the built-in shapes world or your own file (JSON
`{"class": ["descriptor", ...]}` or CSV `class,descriptor`). **3.** Press **Explain concepts**.
The category map explains the image against the class prompt, each concept map against one concept
prompt. **Disentanglability** is high when the concept maps cover different pixels;
**localizability** is high when a map's top pixels alone recover its prompt's score.
"""


class ConceptCallbacks(Protocol):
    """What the Concepts tab uses of the explorer (``vlexplain.app.app.Explorer``)."""

    cache: ModelCache
    samples: dict[str, Any]
    concept_samples: dict[str, Any]
    presets: dict[str, Any]

    def check_upload(self, *args: Any, **kwargs: Any) -> Any: ...
    def change_concept_model(self, *args: Any, **kwargs: Any) -> Any: ...
    def explain_concepts(self, *args: Any, **kwargs: Any) -> Any: ...
    def pick_concept_sample(self, *args: Any, **kwargs: Any) -> Any: ...
    def upload_concepts(self, *args: Any, **kwargs: Any) -> Any: ...
    def pick_concept_set(self, *args: Any, **kwargs: Any) -> Any: ...
    def pick_concept_class(self, *args: Any, **kwargs: Any) -> Any: ...


def _concepts_tab(gr, ex: ConceptCallbacks, model: str, default_model, max_upload_mb: float) -> None:
    """The Concepts tab: a class and its descriptors -> category map, concept maps and DEAL metrics."""
    from ..concepts.sets import CATEGORY_TEMPLATE, CONCEPT_TEMPLATE

    shapes_samples = [k for k in ex.samples if k.startswith("shapes scene")]
    first_sample = (
        shapes_samples[0] if model.startswith("testbed:shapes") and shapes_samples else next(iter(ex.samples))
    )
    first_image, _ = ex.samples[first_sample]()
    first_class, first_descs, first_tpl = ex.concept_samples[first_sample]()
    methods = concept_method_choices(default_model)
    presets = list(ex.presets)

    def on_model(spec, method, progress=gr.Progress()):
        return ex.change_concept_model(spec, method, progress)

    def on_run(path, spec, method, cls_raw, descs_raw, options_raw, cat_tpl, con_tpl, progress=gr.Progress()):
        return ex.explain_concepts(path, spec, method, cls_raw, descs_raw, options_raw, cat_tpl, con_tpl, progress)

    gr.Markdown(CONCEPTS_INTRO, elem_id="vx-c-intro")
    uploaded = gr.State(None)
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            image = _image_input(gr, first_image, max_upload_mb, 240, "vx-c-image")
            sample = gr.Dropdown(
                choices=list(ex.samples),
                value=first_sample,
                elem_id="vx-c-sample",
                label="…or pick a built-in image (suggests a class and descriptors)",
            )
            cls = gr.Textbox(value=first_class, label="Class", max_lines=1, elem_id="vx-c-class")
            descs = gr.Textbox(
                value="\n".join(first_descs),
                lines=4,
                max_lines=MAX_DESCRIPTORS,
                label=f"Descriptors (one per line, at most {MAX_DESCRIPTORS})",
                elem_id="vx-c-descriptors",
            )
            with gr.Group():
                with gr.Row():
                    set_pick = gr.Dropdown(
                        choices=presets, value=presets[0] if presets else None, label="Concept set", elem_id="vx-c-set"
                    )
                    first_set = ex.presets[presets[0]][0]().classes if presets else []
                    class_pick = gr.Dropdown(
                        choices=first_set, value=None, label="…pick a class from it", elem_id="vx-c-pick"
                    )
                concept_file = gr.File(
                    label="…or upload a concept file: JSON {class: [descriptors]} or CSV class,descriptor",
                    file_types=list(CONCEPT_FILE_TYPES),
                    file_count="single",
                    type="filepath",
                    height=130,
                    elem_id="vx-c-file",
                )
            model_box = gr.Dropdown(
                choices=_model_choices(model, ex.cache.allowed),
                value=model,
                allow_custom_value=ex.cache.allowed is None,
                label=_model_label(ex.cache),
                elem_id="vx-c-model",
            )
            method = gr.Dropdown(choices=methods, value=methods[0][1], label="Map method", elem_id="vx-c-method")
            run_btn = gr.Button("Explain concepts", variant="primary", elem_id="vx-c-run")
            status = gr.Markdown(elem_id="vx-c-status")
            with gr.Accordion("Prompt templates and method options", open=False):
                cat_tpl = gr.Textbox(
                    value=first_tpl.category,
                    label=f"Class prompt ({{class}}; default {CATEGORY_TEMPLATE!r})",
                    max_lines=1,
                    elem_id="vx-c-category-template",
                )
                con_tpl = gr.Textbox(
                    value=first_tpl.concept,
                    max_lines=1,
                    elem_id="vx-c-concept-template",
                    label=f"Concept prompt ({{class}}, {{descriptor}}; default {CONCEPT_TEMPLATE!r})",
                )
                options = gr.Textbox(
                    lines=2,
                    label="Options of a registered method: method.option=value, one per line",
                    placeholder="m2ib.steps=5",
                    elem_id="vx-c-options",
                )
        with gr.Column(scale=3, min_width=480):
            gr.Markdown("### Category and concept maps")
            figure = gr.Image(
                label="Concept maps",
                show_label=False,
                type="numpy",
                format="png",
                interactive=False,
                elem_id="vx-c-figure",
            )
            gr.Markdown("### This image's disentanglability and localizability")
            metrics = gr.HTML(
                "<p class='vx-note'>Press <b>Explain concepts</b>: the metrics of this image appear here.</p>",
                elem_id="vx-c-metrics",
            )
            files = gr.File(
                label="Download: figure (PNG) and results (JSON)",
                file_count="multiple",
                interactive=False,
                elem_id="vx-c-download",
            )
    image.upload(ex.check_upload, inputs=image, outputs=status, api_name=False, preprocess=False)
    sample.input(
        ex.pick_concept_sample, inputs=sample, outputs=[image, cls, descs, cat_tpl, con_tpl, status], api_name=False
    )
    concept_file.upload(
        ex.upload_concepts,
        inputs=[concept_file, uploaded],
        outputs=[set_pick, class_pick, uploaded, concept_file, status],
        api_name=False,
        preprocess=False,
    )
    set_pick.input(ex.pick_concept_set, inputs=[set_pick, uploaded], outputs=[class_pick, status], api_name=False)
    class_pick.input(
        ex.pick_concept_class,
        inputs=[set_pick, class_pick, uploaded],
        outputs=[cls, descs, cat_tpl, con_tpl, status],
        api_name=False,
    )
    model_box.change(on_model, inputs=[model_box, method], outputs=[method, status], api_name=False)
    run_btn.click(
        on_run,
        inputs=[image, model_box, method, cls, descs, options, cat_tpl, con_tpl],
        outputs=[figure, metrics, files, status],
        api_name="concepts",
        preprocess=False,
    )
