"""The explorer's Concepts tab: unit tests of its runner and callbacks, and real-browser tests."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.app.support import SERVER_THREADS, _get, _open, _screenshot, _wait_toast

pytest.importorskip("gradio", reason="the web explorer needs the 'app' extra: pip install 'vlexplain[app]'")


# --- the Concepts tab -------------------------------------------------------------------------------

CAT_CONCEPTS = ["pointed ears", "long white whiskers", "striped fur"]


def _direct_concepts(model, image, cls, descriptors, templates=None) -> dict:
    """This image's DEAL maps and metrics straight from vlexplain.concepts (what the tab must show)."""
    from vlexplain.concepts.metrics import disentanglability, localizability
    from vlexplain.concepts.relevance import Templates, deal_maps
    from vlexplain.concepts.sets import ConceptSet

    templates = templates or Templates()
    px = model.preprocess(image)[None]
    cm = deal_maps(model, px, [cls], ConceptSet({cls: tuple(descriptors)}), templates=templates)
    dis, overlap = disentanglability(cm.concepts, cm.mask)
    prompts = [templates.concept_prompt(cls, d) for d in descriptors]
    loc, per = localizability(model, px.expand(len(descriptors), -1, -1, -1), cm.concepts[0], prompts)
    return {
        "disentanglability": dis,
        "mean_pairwise_overlap": overlap,
        "localizability": loc,
        "per": [float(x) for x in per],
        "scores": [float(s) for s in cm.scores[0]],
        "prompts": [templates.category_prompt(cls)] + prompts,
        "px": px,
        "concepts": cm.concepts[0].float(),
        "category": cm.category[0].float(),
    }


def _open_concepts(browser, url):
    page = _open(browser, url)
    page.get_by_role("tab", name="Concepts").click()
    page.wait_for_selector("#vx-c-run", timeout=30_000)
    return page


def _metric(page, key: str) -> float:
    return float(page.locator(f"#vx-c-metrics td[data-key='{key}']").inner_text())


@pytest.mark.slow
def test_browser_concepts_tab(server, browser, files, tmp_path):
    import vlexplain as vx
    from vlexplain.images import load_image

    page = _open_concepts(browser, server)
    page.locator("#vx-c-image input[type=file]").set_input_files(str(files["cat"]))
    page.wait_for_function("document.querySelector('#vx-c-status').innerText.includes('Image ready')", timeout=60_000)
    page.locator("#vx-c-class input").fill("cat")
    page.locator("#vx-c-descriptors textarea").fill("\n".join(CAT_CONCEPTS))
    page.locator("#vx-c-run").click()
    page.wait_for_function("document.querySelector('#vx-c-status').innerText.includes('Done')", timeout=300_000)
    assert "3 concept(s) by deal" in page.locator("#vx-c-status").inner_text()

    # the figure: the image, the category map and three concept maps side by side
    page.locator("#vx-c-figure img").wait_for(timeout=30_000)
    w, h = page.evaluate(
        "() => { const i = document.querySelector('#vx-c-figure img'); return [i.naturalWidth, i.naturalHeight]; }"
    )
    assert w > 700 and h > 550  # two rows of three panels

    # the numbers on the page are those of vlexplain.concepts for the same image and prompts, computed
    # with the server's thread count (float noise can reorder near-tied pixels of the insertion test,
    # so localizability gets a looser tolerance)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(SERVER_THREADS)
    try:
        want = _direct_concepts(vx.load_model("offline"), load_image(files["cat"]), "cat", CAT_CONCEPTS)
    finally:
        torch.set_num_threads(threads)
    for key, tol in (("disentanglability", 2e-4), ("mean_pairwise_overlap", 2e-4), ("localizability", 5e-3)):
        assert _metric(page, key) == pytest.approx(want[key], abs=tol), key
    assert _metric(page, "score:category") == pytest.approx(want["scores"][0], abs=2e-4)
    for j in range(3):
        assert _metric(page, f"score:{j + 1}") == pytest.approx(want["scores"][1 + j], abs=2e-4)
        assert _metric(page, f"localizability:{j + 1}") == pytest.approx(want["per"][j], abs=5e-3)
    shown = page.locator("#vx-c-metrics").inner_text()
    assert all(p in shown for p in want["prompts"]), shown  # "a photo of a cat.", "cat, which has ..."

    links = page.locator("#vx-c-download a[href]")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert any(h.endswith("/vlexplain_concepts.png") for h in hrefs), hrefs
    js = next(h for h in hrefs if h.endswith("/vlexplain_concepts.json"))
    import httpx

    data = httpx.get(js if js.startswith("http") else server.rstrip("/") + js, timeout=10).json()
    assert data["class"] == "cat" and data["descriptors"] == CAT_CONCEPTS and data["method"] == "deal"
    assert data["disentanglability"] == pytest.approx(want["disentanglability"], abs=2e-4)
    assert len(data["concept_maps"]) == 3

    _screenshot(page, "VLEXPLAIN_CONCEPTS_SCREENSHOT", tmp_path / "explorer_concepts.png")
    page.close()


@pytest.mark.slow
def test_browser_concept_sets_and_bad_inputs(server, browser, tmp_path):
    from vlexplain.testbeds.shapes_categories import concept_set

    page = _open_concepts(browser, server)
    # the built-in shapes world: picking a class fills its descriptors and the shapes prompts
    page.locator("#vx-c-pick input").click()
    page.get_by_role("option", name="house", exact=True).click()
    page.wait_for_function(
        "document.querySelector('#vx-c-status').innerText.includes('descriptors from')", timeout=30_000
    )
    assert page.locator("#vx-c-class input").input_value() == "house"
    assert page.locator("#vx-c-descriptors textarea").input_value().splitlines() == concept_set()["house"]
    page.get_by_text("Prompt templates and method options").click()
    assert page.locator("#vx-c-category-template input").input_value() == "a {class}"
    assert page.locator("#vx-c-concept-template input").input_value() == "{descriptor}"

    # an uploaded concept file: its classes replace the menu; picking one fills the boxes
    good = tmp_path / "pets.json"
    good.write_text(json.dumps({"dog": ["floppy ears", "a wet nose"], "cat": CAT_CONCEPTS}))
    page.locator("#vx-c-file input[type=file]").set_input_files(str(good))
    page.wait_for_function(
        "document.querySelector('#vx-c-status').innerText.includes('Read 2 classes')", timeout=30_000
    )
    page.locator("#vx-c-pick input").click()
    page.get_by_role("option", name="dog", exact=True).click()
    page.wait_for_function(
        "document.querySelector('#vx-c-status').innerText.includes(\"'dog': 2 descriptors\")", timeout=30_000
    )
    assert page.locator("#vx-c-descriptors textarea").input_value().splitlines() == ["floppy ears", "a wet nose"]
    assert page.locator("#vx-c-category-template input").input_value() == "a photo of a {class}."

    # bad files and bad fields: a clear message each, and the page keeps working
    bad = tmp_path / "broken.json"
    bad.write_text('{"dog": ["floppy ears", ')
    page.locator("#vx-c-file input[type=file]").set_input_files(str(bad))
    assert "broken.json is not valid JSON" in _wait_toast(page, r"broken\.json is not valid JSON")
    assert "/tmp" not in _wait_toast(page, r"broken\.json is not valid JSON")  # the server path stays hidden
    page.locator("#vx-c-class input").fill("  ")
    page.locator("#vx-c-run").click()
    _wait_toast(page, r"type a class name")
    page.locator("#vx-c-class input").fill("dog")
    page.locator("#vx-c-descriptors textarea").fill("\n".join(f"part {i}" for i in range(12)))
    page.locator("#vx-c-run").click()
    _wait_toast(page, r"at most 8 descriptors per run, got 12")
    page.close()
    assert _get(server) == 200


@pytest.mark.slow
def test_concepts_api_bad_requests_get_clear_messages(server, files):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    cat = handle_file(str(files["cat"]))
    ok = ("offline", "deal", "cat", "pointed ears\nwhiskers", "", "", "")
    cases = [
        ((cat, "offline", "deal", "", "ears", "", "", ""), "type a class name"),
        ((cat, "offline", "deal", "cat", " \n ", "", "", ""), "at least one descriptor"),
        ((cat, "offline", "deal", "cat", "\n".join(f"d{i}" for i in range(9)), "", "", ""), "at most 8 descriptors"),
        ((cat, "offline", "deal", "cat", "ears\nEars.", "", "", ""), "duplicate descriptors"),
        ((cat, "offline", "chefer", "cat", "ears\nnose", "", "", ""), "'chefer' gives no image maps on offline"),
        ((cat, "offline", "deal", "cat", "ears\nnose", "deal.steps=3", "", ""), "unknown option(s) for deal"),
        ((cat, "offline", "deal", "cat", "ears\nnose", "", "a {klass}", ""), "bad prompt template"),
        ((cat, "offline", "deal", "cat", "ears\nnose", "", "", "{class} only"), "must contain {descriptor}"),
        ((cat, "offline", "deal", "cat", "ears\n" + "very " * 80 + "long", "", "", ""), "longer than 12 words"),
        ((handle_file(str(files["fake"])), *ok), "not an image"),
        ((cat, "no-such-model", *ok[1:]), "unknown model"),
    ]
    for args, message in cases:
        with pytest.raises(Exception, match=re.escape(message)):
            client.predict(*args, api_name="/concepts")
    fig, metrics, downloads, status = client.predict(cat, *ok, api_name="/concepts")
    assert status.startswith("Done") and "data-key='disentanglability'" in metrics
    assert _get(server) == 200


def test_run_concepts_equals_the_concepts_module_and_hand_metrics(offline):
    import math

    import torch
    import torch.nn.functional as F

    from vlexplain.app.concept_runner import run_concepts
    from vlexplain.app.render import concept_metrics_html, concept_png
    from vlexplain.testbeds.photos import load_photo

    image = load_photo("cat")
    res = run_concepts(offline, image, "cat", CAT_CONCEPTS, image_name="chelsea.png")
    want = _direct_concepts(offline, image, "cat", CAT_CONCEPTS)
    torch.testing.assert_close(res.concepts, want["concepts"])
    torch.testing.assert_close(res.category, want["category"])
    assert (
        res.prompts
        == want["prompts"]
        == [
            "a photo of a cat.",
            "cat, which has pointed ears.",
            "cat, which has long white whiskers.",
            "cat, which has striped fur.",
        ]
    )
    # by hand: overlaps of the three pairs, the published squashing of their sum, cosine scores
    h = res.concepts.flatten(1)
    pairs = [float((h[i] * h[j]).sum()) for i in range(3) for j in range(i + 1, 3)]
    assert res.mean_overlap == pytest.approx(sum(pairs) / 3, rel=1e-5)
    assert res.overlap_sum == pytest.approx(sum(pairs), rel=1e-5)
    assert res.disentanglability == pytest.approx(1 / (1 + math.exp(-10 * (0.2 - sum(pairs) / 100))), rel=1e-5)
    assert res.disentanglability == pytest.approx(want["disentanglability"], rel=1e-6)
    assert res.localizability == pytest.approx(want["localizability"], rel=1e-6)
    assert res.localizability == pytest.approx(sum(res.per_concept_localizability) / 3, rel=1e-6)
    assert res.per_concept_localizability == pytest.approx(want["per"], rel=1e-6)
    with torch.no_grad():
        ie = F.normalize(offline.encode_image(want["px"]).float(), dim=-1)
        te = F.normalize(offline.encode_text(offline.tokenize(res.prompts)).float(), dim=-1)
    assert res.scores == pytest.approx((ie @ te.T)[0].tolist(), abs=1e-5)
    # the page's table shows those numbers; the figure has 1 + 1 + 3 panels in two rows of three
    html = concept_metrics_html(res)
    assert f"data-key='disentanglability'>{res.disentanglability:.4f}<" in html
    assert f"data-key='localizability:2'>{res.per_concept_localizability[1]:.4f}<" in html
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        arr = concept_png(res, Path(d) / "c.png")
    assert arr.shape[0] > 550 and 700 < arr.shape[1] < 1.5 * arr.shape[0] and arr.dtype == np.uint8

    one = run_concepts(offline, image, "cat", ["pointed ears"])  # one concept: no pairs to compare
    assert one.disentanglability is None and one.mean_overlap is None and "n/a" in concept_metrics_html(one)


def test_concept_inputs_and_files_get_clear_messages(tmp_path):
    from vlexplain.app.concept_runner import (
        MAX_DESCRIPTORS,
        parse_class,
        parse_descriptors,
        parse_templates,
        read_concept_file,
    )
    from vlexplain.errors import InputError

    assert parse_class("  snowy   owl ") == "snowy owl"
    assert parse_descriptors(" white  feathers \n\n yellow eyes\n", "owl") == ["white feathers", "yellow eyes"]
    for raw, msg in [("", "type a class name"), ("x" * 101, "limited to 100 characters")]:
        with pytest.raises(InputError, match=msg):
            parse_class(raw)
    for raw, msg in [
        (" \n", "at least one descriptor of 'owl'"),
        ("\n".join(f"d{i}" for i in range(MAX_DESCRIPTORS + 1)), f"at most {MAX_DESCRIPTORS} descriptors"),
        ("yellow eyes\nYellow  eyes.", "duplicate descriptors"),
    ]:
        with pytest.raises(InputError, match=msg):
            parse_descriptors(raw, "owl")
    assert parse_templates("", " ").category == "a photo of a {class}."
    assert parse_templates("a {class}", "{descriptor} of a {class}").concept_prompt("owl", "beak") == "beak of a owl"
    for cat, con in [
        ("a {cls}", ""),
        ("a {class:>999999999}", ""),
        ("", "{descriptor.__class__}"),
        ("a {", ""),
        ("a {0}", ""),
        ("", "{class!r} {descriptor}"),
        ("{descriptor}", ""),
    ]:
        with pytest.raises(InputError, match="bad prompt template"):
            parse_templates(cat, con)

    (tmp_path / "ok.csv").write_text("class,descriptor\nowl,white feathers\nowl,yellow eyes\ncat,whiskers\n")
    cs = read_concept_file(tmp_path / "ok.csv", "mine.csv")
    assert cs.classes == ["owl", "cat"] and cs.descriptors("owl") == ["white feathers", "yellow eyes"]
    assert cs.source == "mine.csv"
    bad = {
        "a.json": ('["owl"]', "must be a JSON object"),
        "b.json": ('{"owl": "white feathers"}', "not a class name with a list of strings"),
        "c.json": ('{"owl": []}', "no descriptors"),
        "d.csv": ("owl,white,feathers\n", "row 1: expected 2 columns"),
        "e.csv": (b"\xff\xfe\x00owl", "not a UTF-8 text file"),
        "f.txt": ("owl: feathers", "a concept file is a .json file"),
        "g.json": ("[" * 100_000, "cannot be read as a concept file"),
    }
    for name, (content, msg) in bad.items():
        p = tmp_path / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(InputError, match=re.escape(msg)) as err:
            read_concept_file(p, f"upload-{name}")
        assert str(tmp_path) not in str(err.value) and f"upload-{name}" in str(err.value)


def test_explorer_concept_callbacks_fill_fields_and_refuse_unknown_classes(tmp_path):
    import gradio as gr

    from vlexplain.app.app import Explorer
    from vlexplain.app.concept_runner import SHAPES_PRESET
    from vlexplain.app.runner import ModelCache
    from vlexplain.testbeds.shapes_categories import concept_set

    ex = Explorer(ModelCache(lambda spec: pytest.fail("no model is needed here")))
    cls, descs, cat_tpl, con_tpl, status = ex.pick_concept_class(SHAPES_PRESET, "bus", None)
    assert (cls, descs.splitlines(), cat_tpl, con_tpl) == ("bus", concept_set()["bus"], "a {class}", "{descriptor}")
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"owl": [f"part {i}" for i in range(11)]}))
    _, class_menu, state, cleared, status = ex.upload_concepts({"path": str(many), "orig_name": "many.json"}, None)
    assert cleared is None
    assert status.startswith("Read 1 classes") and state["concepts"]["owl"][0] == "part 0"
    cls, descs, cat_tpl, _, status = ex.pick_concept_class(state["label"], "owl", state)
    assert len(descs.splitlines()) == 8 and "the first 8 of its 11" in status and cat_tpl == "a photo of a {class}."
    with pytest.raises(gr.Error, match="class 'eagle' is not in the concept set many.json"):
        ex.pick_concept_class(state["label"], "eagle", state)
    with pytest.raises(gr.Error, match="choose a concept set first"):
        ex.pick_concept_class("uploaded: other.json", "owl", state)
    label = "shapes scene (seed 1)"
    image, cls, descs, cat_tpl, con_tpl, status = ex.pick_concept_sample(label)
    assert image.mode == "RGB" and cls == "mushroom" and descs.splitlines() == concept_set()["mushroom"]
