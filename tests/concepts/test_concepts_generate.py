"""Concept sets from an OpenAI-compatible chat endpoint, against a local fake server."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.support.llm import POOL, FakeServer, generate_args
from vlexplain.cli import main
from vlexplain.concepts.chat import chat_url
from vlexplain.concepts.generate import (
    CACHE_EXCERPT,
    REASK_EXCERPT,
    GenerationError,
    ReplyError,
    generate_concepts,
    parse_descriptors,
    read_classes,
)
from vlexplain.concepts.sets import load_concepts, normalize_name
from vlexplain.errors import InputError


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture
def sleeps():
    return []


def gen(server, sleeps, tmp_path, classes=("Cardinal", "Blue Jay"), k=4, **kw):
    kw.setdefault("retries", 3)
    return generate_concepts(
        list(classes), server.url, "fake-llm", k, cache_dir=tmp_path / "cache", sleep=sleeps.append, **kw
    )


def test_request_shape_result_and_cache(server, sleeps, tmp_path, monkeypatch):
    monkeypatch.setenv("VX_TEST_KEY", "sk-test-123")
    out = gen(server, sleeps, tmp_path, api_key_env="VX_TEST_KEY")
    assert out == {"Cardinal": POOL[:4], "Blue Jay": POOL[:4]}
    assert len(server.requests) == 2
    r = server.requests[0]
    assert r["path"] == "/v1/chat/completions"
    assert r["headers"]["Authorization"] == "Bearer sk-test-123"
    assert r["headers"]["Content-Type"] == "application/json"
    body = r["body"]
    assert body["model"] == "fake-llm" and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert '"Cardinal"' in body["messages"][1]["content"] and "List 4 " in body["messages"][1]["content"]
    assert '"Blue Jay"' in server.requests[1]["body"]["messages"][1]["content"]
    assert load_concepts(out).descriptors("Blue Jay") == POOL[:4]
    # a rerun is answered from the cache; nothing half-written is left there
    assert gen(server, sleeps, tmp_path, api_key_env="VX_TEST_KEY") == out
    assert len(server.requests) == 2
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]
    # another k or model is another cache entry; use_cache=False asks again
    assert gen(server, sleeps, tmp_path, classes=["Cardinal"], k=3)["Cardinal"] == POOL[:3]
    assert len(server.requests) == 3
    gen(server, sleeps, tmp_path, classes=["Cardinal"], use_cache=False)
    assert len(server.requests) == 4
    assert sleeps == []


def test_fenced_reply_is_cleaned_and_trimmed(server, sleeps, tmp_path):
    reply = (
        'Sure!\n```json\n{"descriptors": ["1. Red crest.", "- Black  face mask", "Red Crest", "Grey wings", '
        '"Pale belly", "Dark eyes"]}\n```\n'
    )
    server.script = [(200, reply)]
    out = gen(server, sleeps, tmp_path, classes=["Cardinal"], k=4)
    # numbering, bullets, periods and spacing removed; the case-insensitive repeat dropped; first 4 kept
    assert out == {"Cardinal": ["Red crest", "Black face mask", "Grey wings", "Pale belly"]}
    assert "Authorization" not in server.requests[0]["headers"]  # localhost: no key needed


def test_invalid_reply_is_sent_back_then_fixed(server, sleeps, tmp_path):
    server.script = [(200, "I think a cardinal is red.")]
    out = gen(server, sleeps, tmp_path, classes=["Cardinal"])
    assert out["Cardinal"] == POOL[:4]
    assert len(server.requests) == 2
    msgs = server.requests[1]["body"]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2]["content"] == "I think a cardinal is red."
    assert "not valid JSON" in msgs[3]["content"]
    assert sleeps == []


def test_too_few_descriptors_fails_naming_the_class_and_keeps_the_others(server, sleeps, tmp_path):
    few = json.dumps({"descriptors": ["Red crest", "Cardinal", "a very long descriptor that goes on and on here"]})
    server.script = [(200, few), (200, few)]
    with pytest.raises(InputError, match=r"'Cardinal' \(expected 4 usable descriptors, got 1"):
        gen(server, sleeps, tmp_path, retries=1)
    assert len(server.requests) == 3  # Cardinal twice, then Blue Jay
    # the feedback names what was wrong
    feedback = server.requests[1]["body"]["messages"][3]["content"]
    assert "only the category name" in feedback and "more than 8 words" in feedback
    # a rerun asks only for the class that failed
    out = gen(server, sleeps, tmp_path, retries=1)
    assert len(server.requests) == 4 and '"Cardinal"' in server.requests[3]["body"]["messages"][1]["content"]
    assert list(out) == ["Cardinal", "Blue Jay"]


def test_429_honours_retry_after_and_5xx_backs_off(server, sleeps, tmp_path):
    busy = {"error": {"message": "rate limited"}}
    server.script = [(429, busy, {"Retry-After": "2"}), (500, "oops"), (503, "oops"), (502, "oops")]
    out = gen(server, sleeps, tmp_path, classes=["Cardinal"], backoff=0.5, retries=4)
    assert out["Cardinal"] == POOL[:4]
    assert len(server.requests) == 5
    assert sleeps == [2.0, 1.0, 2.0, 4.0]  # Retry-After, then 0.5 * 2**attempt


def test_5xx_gives_up_after_retries(server, sleeps, tmp_path):
    server.script = [(500, {"error": {"message": "model overloaded"}})] * 3
    with pytest.raises(InputError, match="HTTP 500: model overloaded.*gave up after 3 attempt"):
        gen(server, sleeps, tmp_path, classes=["Cardinal"], retries=2, backoff=0.1)
    assert len(server.requests) == 3 and sleeps == [0.1, 0.2]


def test_401_fails_at_once_with_the_server_message(server, sleeps, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    server.script = [(401, {"error": {"message": "Incorrect API key provided"}})]
    with pytest.raises(InputError, match="HTTP 401: Incorrect API key provided"):
        gen(server, sleeps, tmp_path)
    assert len(server.requests) == 1 and sleeps == []
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_timeout_is_retried(server, sleeps, tmp_path):
    server.script = [("sleep", 0.8)]
    out = gen(server, sleeps, tmp_path, classes=["Cardinal"], timeout=0.2, retries=1, backoff=0.25)
    assert out["Cardinal"] == POOL[:4] and sleeps == [0.25] and len(server.requests) == 2


def test_missing_key_for_a_remote_server(tmp_path, monkeypatch):
    monkeypatch.delenv("VX_NO_SUCH_KEY", raising=False)
    with pytest.raises(InputError, match="set the environment variable VX_NO_SUCH_KEY"):
        generate_concepts(
            ["Cardinal"], "https://llm.example.com/v1", "m", api_key_env="VX_NO_SUCH_KEY", cache_dir=tmp_path
        )


@pytest.mark.parametrize(
    "given,url",
    [
        ("http://localhost:8000/v1", "http://localhost:8000/v1/chat/completions"),
        ("http://localhost:8000/v1/", "http://localhost:8000/v1/chat/completions"),
        ("http://localhost:8000", "http://localhost:8000/v1/chat/completions"),
        ("https://host/openai/v1", "https://host/openai/v1/chat/completions"),
        ("https://host/v1/chat/completions", "https://host/v1/chat/completions"),
    ],
)
def test_chat_url(given, url):
    assert chat_url(given) == url


def test_chat_url_rejects_non_http():
    with pytest.raises(InputError, match="http"):
        chat_url("localhost:8000")


def test_parse_descriptors_rules():
    assert parse_descriptors('["Red crest", "Black mask", "Grey wings"]', "Cardinal", 2) == ["Red crest", "Black mask"]
    assert parse_descriptors('{"items": ["A b", "C d"]}', "X", 2) == ["A b", "C d"]
    with pytest.raises(ReplyError, match="a repeat"):
        parse_descriptors('{"descriptors": ["Red crest", "red  crest."]}', "Cardinal", 2)
    with pytest.raises(ReplyError, match="more than 3 words"):
        parse_descriptors('{"descriptors": ["Red crest", "one two three four"]}', "Cardinal", 2, max_words=3)
    with pytest.raises(ReplyError, match="only the category name"):
        parse_descriptors('{"descriptors": ["Red crest", "Blue-Jay"]}', "Blue Jay", 2)
    with pytest.raises(ReplyError, match="not valid JSON"):
        parse_descriptors('{"descriptors": ["Red crest",', "Cardinal", 1)


def test_read_classes(tmp_path):
    p = tmp_path / "classes.txt"
    p.write_text("# birds\nCardinal\n\n  Blue   Jay \n")
    assert read_classes(p) == ["Cardinal", "Blue Jay"]
    j = tmp_path / "c.json"
    j.write_text('["Cardinal", "Blue Jay"]')
    assert read_classes(j) == ["Cardinal", "Blue Jay"]
    folders = tmp_path / "ds"
    for d in ("Blue_Jay", "Cardinal", ".hidden"):
        (folders / d).mkdir(parents=True)
    assert read_classes(folders) == ["Blue Jay", "Cardinal"]
    cub = tmp_path / "cub" / "CUB_200_2011"
    cub.mkdir(parents=True)
    (cub / "classes.txt").write_text("2 017.Cardinal\n1 001.Black_footed_Albatross\n")
    assert read_classes(tmp_path / "cub") == ["Black footed Albatross", "Cardinal"]
    p.write_text("Cardinal\ncardinal\n")
    with pytest.raises(InputError, match="repeated class names"):
        read_classes(p)
    with pytest.raises(InputError, match="not found"):
        read_classes(tmp_path / "nope.txt")


def test_cli_end_to_end(server, tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("Cardinal\nBlue Jay\n")
    out = tmp_path / "set" / "concepts.json"
    args = generate_args(classes, server.url, out, "--no-progress", k=5, cache=tmp_path / "cache")
    assert main(args) == 0
    cs = load_concepts(out)
    assert cs.classes == ["Cardinal", "Blue Jay"] and cs.descriptors("Cardinal") == POOL[:5]
    assert "2 generated, 0 from the cache" in capsys.readouterr().out
    assert main(args) == 0
    assert "0 generated, 2 from the cache" in capsys.readouterr().out
    assert len(server.requests) == 2


def test_cli_errors(tmp_path, capsys):
    out = tmp_path / "concepts.json"
    rc = main(
        [
            "concepts",
            "generate",
            "--classes",
            str(tmp_path / "missing.txt"),
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --classes") and "not found" in err
    classes = tmp_path / "classes.txt"
    classes.write_text("Cardinal\n")
    rc = main(
        [
            "concepts",
            "generate",
            "--classes",
            str(classes),
            "--base-url",
            f"http://127.0.0.1:{free_port()}/v1",
            "--model",
            "m",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "connection refused" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def free_port() -> int:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- time limits that mean what they say; visible waits ----------------------------------------
def test_timeout_bounds_the_whole_reply(server, sleeps, tmp_path):
    """A server that trickles a valid reply one byte at a time (for ~25 s) is cut off at --timeout."""
    server.script = [("trickle", 0.1)]
    with pytest.raises(InputError, match=r"no complete reply within 0.6 s \(gave up after 1 attempt"):
        gen(server, sleeps, tmp_path, classes=["Cardinal"], timeout=0.6, retries=0)
    deadline = time.monotonic() + 30
    while server.cut == 0 and time.monotonic() < deadline:  # the client hung up before the reply's end
        time.sleep(0.05)
    assert server.cut == 1 and len(server.requests) == 1
    # a timeout is retried once (not `retries` times), visibly
    said = []
    server.script = [("trickle", 0.1), ("trickle", 0.1)]
    with pytest.raises(InputError, match="gave up after 2 attempt"):
        gen(server, sleeps, tmp_path, classes=["Cardinal"], timeout=0.5, retries=4, backoff=0.25, notify=said.append)
    assert len(server.requests) == 3 and sleeps == [0.25]
    assert said == ["Cardinal: no complete reply within 0.5 s; retrying in 0.25 s (attempt 2 of at most 5)"]


def test_connection_refused_fails_at_once(sleeps, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(InputError, match="connection refused; is the server running"):
        generate_concepts(["Cardinal"], url, "m", 4, cache_dir=tmp_path, retries=4, sleep=sleeps.append)
    assert sleeps == []


def test_retries_and_slow_replies_are_reported(server, sleeps, tmp_path):
    said = []
    server.script = [
        (429, {"error": {"message": "slow down"}}, {"Retry-After": "3"}),
        (502, "bad gateway"),
        ("sleep", 1.0),
    ]
    out = gen(server, sleeps, tmp_path, classes=["Cardinal"], backoff=0.5, notify=said.append, notice_after=0.2)
    assert out["Cardinal"] == POOL[:4] and sleeps == [3.0, 1.0]
    assert said[:2] == [
        "Cardinal: HTTP 429: slow down; retrying in 3 s (attempt 2 of at most 4)",
        "Cardinal: HTTP 502: bad gateway; retrying in 1 s (attempt 3 of at most 4)",
    ]
    assert len(said) == 3 and said[2].startswith(f"Cardinal: waiting for fake-llm at {server.url}/chat/completions")


def test_cli_reports_retries_unless_quiet(server, tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("Cardinal\n")
    busy = (503, {"error": {"message": "loading model"}}, {"Retry-After": "0"})
    args = generate_args(classes, server.url, tmp_path / "c.json", "--refresh", cache=tmp_path / "cache")
    for flags, shown in ((["--no-progress"], True), ([], True), (["--quiet"], False)):
        server.script = [busy]
        assert main(args + flags) == 0
        err = capsys.readouterr().err
        assert ("Cardinal: HTTP 503: loading model; retrying in 0 s (attempt 2 of at most 5)" in err) == shown, flags


# --- re-asks, the cache, per-class failures, Markdown lists ---------------------------------------
def test_reask_sends_only_the_last_bad_answer_cut_short(server, sleeps, tmp_path):
    first, second = "x" * 300_000, "y" * 300_000
    server.script = [(200, first), (200, second)]
    out = gen(server, sleeps, tmp_path, classes=["Cardinal"])
    assert out["Cardinal"] == POOL[:4] and len(server.requests) == 3
    for r, bad in zip(server.requests[1:], (first, second)):
        msgs = r["body"]["messages"]
        assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
        assert msgs[2]["content"] == bad[:REASK_EXCERPT] + " [... 299000 more characters cut]"
        assert "not valid JSON" in msgs[3]["content"]
    assert len(json.dumps(server.requests[2]["body"])) < 5_000


def test_cache_keeps_descriptors_and_a_bounded_excerpt(server, sleeps, tmp_path):
    chatter = "Let me think about cardinals. " * 20_000  # 600 kB before the answer
    reply = chatter + json.dumps({"descriptors": POOL[:4]})
    server.script = [(200, reply)]
    assert gen(server, sleeps, tmp_path, classes=["Cardinal"])["Cardinal"] == POOL[:4]
    (path,) = (tmp_path / "cache").glob("*.json")
    entry = json.loads(path.read_text(encoding="utf-8"))
    assert entry["descriptors"] == POOL[:4] and entry["reply_chars"] == len(reply)
    assert entry["reply_excerpt"].startswith("Let me think") and len(entry["reply_excerpt"]) < CACHE_EXCERPT + 50
    assert path.stat().st_size < 4_000


def test_a_refused_class_is_skipped_and_listed(server, sleeps, tmp_path, capsys):
    server.script = [(400, {"error": {"message": "prompt rejected by the content filter"}})]
    with pytest.raises(GenerationError) as e:
        gen(server, sleeps, tmp_path, classes=["Cardinal", "Blue Jay", "Robin"])
    assert e.value.failed == {"Cardinal": "HTTP 400: prompt rejected by the content filter"}
    assert "1 of 3 class(es) got no descriptors: 'Cardinal' (HTTP 400" in str(e.value)
    assert len(server.requests) == 3 and len(list((tmp_path / "cache").glob("*.json"))) == 2
    assert capsys.readouterr().err == (
        "Cardinal: no descriptors (HTTP 400: prompt rejected by the content filter); going on with the other classes\n"
    )
    # unusable replies fail their class too; the CLI exits non-zero naming every failed class, writes nothing
    classes = tmp_path / "classes.txt"
    classes.write_text("Cardinal\nBlue Jay\nRobin\nWren\n")
    out = tmp_path / "concepts.json"
    server.script = [(200, "no idea"), (200, "still no idea"), (413, "too large")]
    rc = main(generate_args(classes, server.url, out, "--retries", "1", "--quiet", cache=tmp_path / "cache"))
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists() and len(err.strip().splitlines()) == 1
    assert (
        "error: 2 of 4 class(es) got no descriptors: 'Cardinal' (the answer is not valid JSON" in err
        and "'Wren' (HTTP 413: too large)" in err
    )
    assert len(server.requests) == 3 + 3  # Cardinal twice, Wren once; Blue Jay and Robin from the cache
    # a rerun asks only for the failed classes
    assert main(generate_args(classes, server.url, out, "--quiet", cache=tmp_path / "cache")) == 0
    assert len(server.requests) == 8 and list(load_concepts(out).classes) == ["Cardinal", "Blue Jay", "Robin", "Wren"]


def test_markdown_lists_are_answers_when_every_line_is_a_descriptor(server, sleeps, tmp_path):
    md = "- Red crest\n- **Black face mask**\n\n* `Short, thick bill`\n1. Grey wings.\n2) Pale belly\n"
    assert parse_descriptors(md, "Cardinal", 5) == [
        "Red crest",
        "Black face mask",
        "Short, thick bill",
        "Grey wings",
        "Pale belly",
    ]
    assert parse_descriptors("```markdown\n- Red crest\n- Grey wings\n```", "Cardinal", 2) == [
        "Red crest",
        "Grey wings",
    ]
    for bad in ("Here they are:\n- Red crest\n- Grey wings", "- Red crest\nGrey wings", "Red crest, grey wings"):
        with pytest.raises(ReplyError, match="not valid JSON"):
            parse_descriptors(bad, "Cardinal", 2)
    server.script = [(200, "- Red crest\n- Black face mask\n- Grey wings\n- Pale belly")]
    assert gen(server, sleeps, tmp_path, classes=["Cardinal"])["Cardinal"] == [
        "Red crest",
        "Black face mask",
        "Grey wings",
        "Pale belly",
    ]
    assert len(server.requests) == 1


# --- class names in every script -------------------------------------------------------------------
UNICODE_NAMES = ["Сорока", "北京鸭", "Pâté", "Pât", "Robin 🐦", "🐟", "🐠", "Straße", "Ｗｒｅｎ"]


def test_unicode_class_names(server, sleeps, tmp_path):
    p = tmp_path / "classes.txt"
    p.write_text("\n".join(UNICODE_NAMES) + "\n", encoding="utf-8")
    assert read_classes(p) == UNICODE_NAMES
    assert [normalize_name(n) for n in UNICODE_NAMES] == [
        "сорока",
        "北京鸭",
        "pâté",
        "pât",
        "robin",
        "🐟",
        "🐠",
        "strasse",
        "wren",
    ]
    for a, b in (("Сорока", "сорока"), ("Straße", "STRASSE"), ("Robin 🐦", "robin"), ("Wren", "Ｗｒｅｎ")):
        p.write_text(f"{a}\n{b}\n", encoding="utf-8")
        with pytest.raises(InputError, match="repeated class names"):
            read_classes(p)
    out = gen(server, sleeps, tmp_path, classes=UNICODE_NAMES)
    assert list(out) == UNICODE_NAMES and len(server.requests) == len(UNICODE_NAMES)
    assert '"Сорока"' in server.requests[0]["body"]["messages"][1]["content"]
    files = sorted(f.name for f in (tmp_path / "cache").glob("*.json"))
    assert len(files) == len(UNICODE_NAMES)  # one per class: no two share a file
    slugs = sorted(f.rsplit("-", 1)[0] for f in files)
    assert slugs == sorted(["сорока", "北京鸭", "pâté", "pât", "robin", "class", "class", "strasse", "wren"])
    assert all(len(f.encode()) < 120 and not set(f) & set('/\\:*?"<>|') for f in files)
    # rerun from the cache; the set aligns with case- and width-folded names
    assert gen(server, sleeps, tmp_path, classes=UNICODE_NAMES) == out and len(server.requests) == len(UNICODE_NAMES)
    from vlexplain.concepts.sets import ConceptSet

    aligned = ConceptSet({c: tuple(d) for c, d in out.items()}).align(["СОРОКА", "PÂTÉ", "Pât", "wren"])
    assert aligned.classes == ["СОРОКА", "PÂTÉ", "Pât", "wren"] and aligned.descriptors("PÂTÉ") == POOL[:4]


def test_remote_server_through_the_environments_proxy(server, sleeps, tmp_path, monkeypatch):
    """A plain-HTTP remote URL goes through $http_proxy (here the fake server plays the proxy)."""
    monkeypatch.setenv("http_proxy", server.url.rsplit("/", 1)[0])
    monkeypatch.setenv("no_proxy", "")
    monkeypatch.delenv("NO_PROXY", raising=False)
    out = generate_concepts(
        ["Cardinal"],
        "http://llm.example.com/v1",
        "m",
        4,
        require_key=False,
        cache_dir=tmp_path / "cache",
        sleep=sleeps.append,
    )
    assert out["Cardinal"] == POOL[:4]
    assert server.requests[0]["path"] == "http://llm.example.com/v1/chat/completions"
