"""The server under bad clients: broken pictures and JSON, huge bodies, slow and silent connections."""

import asyncio
import base64
import io
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import digitrec
from digitrec.recognize import Recognizer
from digitrec.web.app import STATIC, create_app, listen, server_config

REPRO = Path(__file__).resolve().parents[1].parent / "shared" / "repro"


@pytest.fixture(scope="module")
def rec():
    return digitrec.load()


@pytest.fixture(scope="module")
def client(rec):
    with TestClient(create_app(rec)) as c:
        yield c


class Server:
    """A real uvicorn server on a free loopback port, in a thread, with the settings `digitrec serve` uses."""

    def __init__(self, app, **kw):
        self.sock = listen("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(server_config(app, log_level="error", **kw))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port))
        s.settimeout(10)
        return s


def closed_within(s: socket.socket, seconds: float) -> bool:
    """True if the server closes the connection within `seconds`, with no answer or a complete one."""
    s.settimeout(seconds)
    try:
        while s.recv(65536):
            pass
        return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("name, status", [
    ("dots-zerodiv.png", 200), ("dithered-pencil-5326.png", 200), ("tiff-multipage-bad-ifd.tif", 422),
    ("avif-named-png.png", 415), ("png-palette-trns.png", 200), ("gif-6300sq.gif", 200),
    ("gif-10000sq.gif", 413), ("webp-anim-6300.webp", 413), ("png-6300sq-la8.png", 200),
])
def test_each_picture_that_broke_the_server_gets_an_answer(client, name, status):
    answer = client.post("/api/read", files={"file": (name, (REPRO / name).read_bytes())})
    assert answer.status_code == status, answer.text
    if status != 200:
        detail = answer.json()["detail"]
        assert "\n" not in detail and "/" not in detail.replace("n/a", "")


def test_json_that_is_not_utf8_gets_422_without_its_bytes(client):
    for path in ("/api/read", "/api/classify"):
        answer = client.post(path, content=b'{"image": "\xff\xfe\x00"}', headers={"content-type": "application/json"})
        assert answer.status_code == 422 and "Invalid JSON" in answer.json()["detail"][0]["msg"]


def test_a_big_bad_classify_body_gets_a_short_422(client):
    body = json.dumps({"images": [[[300] * 28] * 28] * 256}).encode()  # 2 MB of values out of range
    answer = client.post("/api/classify", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422 and len(answer.content) < 10_000
    assert "300" not in answer.text  # the values themselves are never sent back


def test_base64_with_line_breaks_reads_like_plain_base64(client):
    png = io.BytesIO()
    Image.new("L", (60, 60), 255).save(png, "PNG")
    wrapped = base64.encodebytes(png.getvalue()).decode()  # 76 characters a line, as `base64 FILE` prints
    assert "\n" in wrapped
    answer = client.post("/api/read", json={"image": wrapped})
    assert answer.status_code == 200 and answer.json()["text"] == ""


def test_docs_work_offline_under_a_strict_policy(client):
    answer = client.get("/docs")
    assert answer.status_code == 200
    policy = answer.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe" not in policy
    html = answer.text
    assert "http" not in html and "<script>" not in html  # nothing from elsewhere, no inline script
    for asset in ("/static/swagger/swagger-ui-bundle.js", "/static/swagger/swagger-ui.css", "/static/swagger/docs.js"):
        assert asset in html and client.get(asset).status_code == 200
    assert (STATIC / "swagger" / "LICENSE").is_file()


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["image", "images", "file", "x"]), inner, max_size=3), max_leaves=30),
       st.sampled_from(["/api/read", "/api/classify"]))
def test_any_json_body_gets_an_answer_and_no_server_error(client, body, path):
    answer = client.post(path, json=body)
    assert answer.status_code in (200, 413, 415, 422), answer.text
    assert "detail" in answer.json() or answer.status_code == 200


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["/api/read", "/api/classify"]))
def test_any_bytes_sent_as_json_get_an_answer_and_no_server_error(client, body, path):
    answer = client.post(path, content=body, headers={"content-type": "application/json"})
    assert answer.status_code in (200, 413, 415, 422), answer.text


# ---------------------------------------------------------------------------------------------------
# Connections: deadlines, a cap, and health answered whatever the readings are doing


def test_slow_silent_and_short_bodied_clients_are_let_go(rec):
    with Server(create_app(rec), request_timeout=1) as server:
        silent, partial, short = server.connect(), server.connect(), server.connect()
        partial.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        short.sendall(b"POST /api/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"images\": ")
        assert all(closed_within(s, 5) for s in (silent, partial, short))
        assert httpx.get(f"http://127.0.0.1:{server.port}/api/health").json() == {"status": "ok"}


def test_connections_over_the_cap_are_closed_at_once(rec):
    with Server(create_app(rec), max_connections=5) as server:
        held = [server.connect() for _ in range(5)]
        time.sleep(0.3)
        extra = server.connect()
        assert closed_within(extra, 2)
        for s in held:
            s.close()
        time.sleep(0.3)
        assert httpx.get(f"http://127.0.0.1:{server.port}/api/health").json() == {"status": "ok"}


def test_health_answers_at_once_while_every_reading_waits(rec):
    release = threading.Event()

    def stuck(x):  # a model that takes as long as the test wants
        release.wait(30)
        return np.zeros((len(x), 10), np.float32)

    png = io.BytesIO()
    Image.fromarray(np.pad(np.full((40, 8), 0, np.uint8), 30, constant_values=255)).save(png, "PNG")
    app = create_app(Recognizer(stuck, rec.meta), workers=2)
    with Server(app) as server:
        url = f"http://127.0.0.1:{server.port}"

        async def load():
            async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=100)) as http:
                reads = [asyncio.create_task(http.post("/api/read", files={"file": ("a.png", png.getvalue())}))
                         for _ in range(60)]  # more than the server's worker threads
                await asyncio.sleep(1.5)
                start = time.monotonic()
                health = await http.get("/api/health")
                waited = time.monotonic() - start
                release.set()
                answers = await asyncio.gather(*reads)
                return health, waited, answers

        health, waited, answers = asyncio.run(load())
    assert health.json() == {"status": "ok"} and waited < 1
    assert {a.status_code for a in answers} == {200}


def test_docs_page_shows_every_route_in_a_browser_with_no_internet(rec):
    from playwright.sync_api import sync_playwright

    from test_web_browser import ARTIFACTS, CHROMIUM, FLAGS

    with Server(create_app(rec)) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        elsewhere, problems = [], []
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
            f"http://127.0.0.1:{server.port}/") else (elsewhere.append(route.request.url), route.abort()))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.goto(f"http://127.0.0.1:{server.port}/docs")
        page.locator(".opblock-summary-path").first.wait_for(timeout=30_000)
        paths = set(page.locator(".opblock-summary-path").all_inner_texts())
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "docs.png"))
        browser.close()
    assert {"/api/read", "/api/classify", "/api/health", "/api/model"} <= {p.replace("\u200b", "") for p in paths}
    assert not elsewhere and not problems, (elsewhere, problems)
