"""The web explorer's bounded model cache, its allow-list, its host rule and its one-line logs."""

from __future__ import annotations

import pytest


# --- the web explorer: bounded model cache, allow-list, one-line logs -------------------------------
class _Model:
    def __init__(self, spec):
        self.spec = spec


def test_model_cache_keeps_the_most_recently_used_few():
    import gc
    import weakref

    from vlexplain.app.runner import ModelCache

    calls = []

    def loader(spec):
        calls.append(spec)
        return _Model(spec)

    cache = ModelCache(loader)  # default: 2 models
    a = weakref.ref(cache.get("a")[0])
    cache.get("b")
    cache.get("a")  # a is now the most recent
    cache.get("c")  # drops b, the least recently used
    assert cache.loaded() == ["a", "c"] and "b" not in cache and calls == ["a", "b", "c"]
    cache.get("b")  # loaded again; drops a
    assert cache.loaded() == ["c", "b"] and calls == ["a", "b", "c", "b"]
    gc.collect()
    assert a() is None  # nothing else holds a dropped model: its memory is freed
    one = ModelCache(loader, max_models=1)
    for s in "xyzxy":
        one.get(s)
    assert one.loaded() == ["y"]


def test_model_cache_allow_list_refuses_other_specs():
    from vlexplain.app.runner import ModelCache
    from vlexplain.errors import InputError

    cache = ModelCache(_Model, allowed=["offline", "testbed:shapes"])
    assert cache.get(" offline ")[0].spec == "offline"
    for spec in ("open_clip:ViT-L-14/laion2b", "/etc", "hf:org/name", ""):
        with pytest.raises(InputError, match="choose one of: offline, testbed:shapes|no model given"):
            cache.get(spec)
    assert cache.loaded() == ["offline"]
    with pytest.raises(InputError):
        ModelCache(_Model, max_models=0)


@pytest.mark.parametrize(
    "host,models,expected",
    [
        ("127.0.0.1", None, None),
        ("localhost", None, None),
        ("::1", None, None),
        ("0.0.0.0", None, ["m0"]),
        ("192.168.1.5", None, ["m0"]),
        ("0.0.0.0", ["m0", "m1"], ["m0", "m1"]),
    ],
)
def test_launch_restricts_models_unless_bound_to_loopback(monkeypatch, host, models, expected):
    import vlexplain.app.app as appmod

    seen = {}

    class Demo:
        def queue(self, **kw):
            pass

    def fake_build(model, max_upload_mb, cache):
        seen["cache"] = cache
        return Demo()

    monkeypatch.setattr(appmod, "build_app", fake_build)
    monkeypatch.setattr(appmod, "_serve", lambda *a: None)
    appmod.launch(model="m0", host=host, models=models, max_models=3)
    assert seen["cache"].allowed == expected and seen["cache"].max_models == 3


def test_launch_port_in_use_is_a_one_line_error(monkeypatch):
    import vlexplain.app.app as appmod
    from vlexplain.errors import InputError

    class Demo:
        def queue(self, **kw):
            pass

    def busy(*a):
        raise OSError("Cannot find empty port in range: 7860-7860")

    monkeypatch.setattr(appmod, "build_app", lambda *a: Demo())
    monkeypatch.setattr(appmod, "_serve", busy)
    with pytest.raises(InputError, match="cannot serve on 127.0.0.1:7860: Cannot find empty port"):
        appmod.launch(model="m0")


def test_user_errors_are_logged_in_one_line_without_traceback(caplog):
    pytest.importorskip("gradio")
    from vlexplain.app.app import Explorer
    from vlexplain.app.runner import ModelCache

    ex = Explorer(ModelCache(lambda spec: pytest.fail("no model is needed here")))
    with caplog.at_level("WARNING", logger="vlexplain.app"):
        with pytest.raises(Exception) as err:
            ex.explain(None, "a cat", "offline", ["center"], "", 0)
    assert err.value.print_exception is False  # gradio prints no traceback for it
    msgs = [r.getMessage() for r in caplog.records if r.name == "vlexplain.app"]
    assert msgs == ["request refused: upload an image or pick a built-in photo first"]
