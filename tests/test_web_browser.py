"""The page in a real headless Chromium: digits written with the mouse or a finger are read live, and
pictures chosen or dropped come back annotated. Screenshots go to test-artifacts/.

Debian's chromium is driven by the playwright package; no browser is ever downloaded.
"""

import base64
import socket
import threading
import time

import numpy as np
import pytest
import uvicorn
from playwright.sync_api import expect, sync_playwright

from conftest import REPO, need
from digitrec.web.app import create_app
from test_web import mnist_test, photo, rec  # noqa: F401  (fixtures)

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
ARTIFACTS = REPO / "test-artifacts"
WAIT_MS = 30_000  # a reading takes milliseconds, but the machine may be busy
DESKTOP = {"viewport": {"width": 1280, "height": 860}}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3, "is_mobile": True, "has_touch": True}

# Handwriting in a unit box (x right, y down): a 7 in one stroke and a slightly slanted 1.
SEVEN = [(0.02, 0.08), (0.3, 0.04), (0.62, 0.02), (0.95, 0.03), (0.8, 0.3), (0.62, 0.6), (0.48, 0.98)]
ONE = [(0.62, 0.0), (0.57, 0.35), (0.52, 0.7), (0.48, 1.0)]


@pytest.fixture(scope="module")
def server(rec):  # noqa: F811
    """The app on a free loopback port, served by uvicorn in a thread of this process."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(create_app(rec), log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(600):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=need(CHROMIUM, "chromium"), args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def open_page(browser, server):
    """Open the page in a fresh context; checks afterwards that it fetched nothing from elsewhere and
    raised no script errors."""
    contexts, requests, errors = [], [], []

    def opener(**kw):
        context = browser.new_context(**kw)
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server + "/")
        expect(page.locator("#model-info")).to_contain_text("model ")
        return page

    yield opener
    for context in contexts:
        context.close()
    assert errors == []
    assert [u for u in requests if not u.startswith((server + "/", "data:", "blob:"))] == []


def handwriting(shape, left, top, height, rng, steps=8):
    """Points along a stroke in page pixels, the way a hand moves: small steps, a little wobble."""
    pts = [(left + x * 0.55 * height, top + y * height) for x, y in shape]
    out = []
    for (ax, ay), (bx, by) in zip(pts, pts[1:]):
        for i in range(steps):
            t = i / steps
            out.append((ax + (bx - ax) * t + rng.normal(0, 0.4), ay + (by - ay) * t + rng.normal(0, 0.4)))
    return out + [pts[-1]]


def strokes_71(page):
    box = page.locator("#pad").bounding_box()
    rng = np.random.default_rng(7)
    h = 0.62 * box["height"]
    top = box["y"] + 0.19 * box["height"]
    left = box["x"] + 0.5 * box["width"] - 0.7 * h
    return [handwriting(SEVEN, left, top, h, rng), handwriting(ONE, left + 0.75 * h, top, h, rng)]


def draw_with_mouse(page, stroke):
    page.mouse.move(*stroke[0])
    page.mouse.down()
    for x, y in stroke[1:]:
        page.mouse.move(x, y)
    page.mouse.up()


def draw_with_finger(page, cdp, stroke):
    for kind, points in [("touchStart", stroke[:1])] + [("touchMove", [p]) for p in stroke[1:]] + [("touchEnd", [])]:
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y} for x, y in points]})


def reading_after(page, strokes: int, prefix: str = "draw"):
    """The reading shown once the page has read the drawing with all its strokes."""
    text = page.locator(f'#{prefix}-text[data-state="done"][data-strokes="{strokes}"]')
    expect(text).to_be_visible()
    return text.text_content()


def overlay_pixels(page, colour: str) -> int:
    """How many pixels of the box-and-label overlay are drawn in green or orange."""
    return page.evaluate("""(colour) => {
        const c = document.getElementById("overlay");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4)
            if (d[i + 3] > 200 && (colour === "green" ? d[i + 1] > 150 && d[i] < 80 : d[i] > 200 && d[i + 2] < 60)) n++;
        return n;
    }""", colour)


def test_digits_written_with_the_mouse_are_read_live(open_page):
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_page(**DESKTOP)
    seven, one = strokes_71(page)
    draw_with_mouse(page, seven)
    assert reading_after(page, 1) == "7"
    draw_with_mouse(page, one)
    assert reading_after(page, 2) == "71"
    cards = page.locator("#draw-digits li")
    expect(cards).to_have_count(2)
    expect(cards.first.locator(".bar")).to_have_count(3)
    assert overlay_pixels(page, "green") + overlay_pixels(page, "orange") > 500
    page.screenshot(path=ARTIFACTS / "web-draw-desktop.png")

    page.get_by_role("button", name="Undo").click()
    assert reading_after(page, 1) == "7"
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#draw-text")).to_have_attribute("data-state", "empty")
    expect(cards).to_have_count(0)
    expect(page.get_by_role("button", name="Undo")).to_be_disabled()


def test_digits_written_with_a_finger_on_a_phone_are_read(open_page):
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_page(**PHONE)
    cdp = page.context.new_cdp_session(page)
    for stroke in strokes_71(page):
        draw_with_finger(page, cdp, stroke)
    assert reading_after(page, 2) == "71"
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
    page.screenshot(path=ARTIFACTS / "web-draw-phone.png", full_page=True)


def test_a_chosen_picture_is_read_and_shown_annotated(open_page, photo, tmp_path):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_page(**DESKTOP)
    (tmp_path / "number.jpg").write_bytes(photo)
    page.locator("#file").set_input_files(tmp_path / "number.jpg")
    expect(page.locator('#upload-text[data-state="done"]')).to_have_text("314159")
    expect(page.locator("#upload-digits li")).to_have_count(6)
    image = page.locator("#annotated")
    assert image.get_attribute("src").startswith("data:image/")
    page.wait_for_function("document.getElementById('annotated').naturalWidth > 0")
    page.locator("#upload").screenshot(path=ARTIFACTS / "web-upload-desktop.png")

    (tmp_path / "notes.txt").write_text("not a picture")
    page.locator("#file").set_input_files(tmp_path / "notes.txt")
    expect(page.locator("#upload-status.error")).to_contain_text("notes.txt: Cannot read the picture: not an image")
    expect(page.locator("#drop")).to_be_visible()


def test_a_picture_dropped_on_the_page_is_read(open_page, photo):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    page = open_page(**PHONE)
    dropped = page.evaluate_handle("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "number.jpg", { type: "image/jpeg" }));
        return transfer;
    }""", base64.b64encode(photo).decode())
    page.dispatch_event("#drop", "dragover", {"dataTransfer": dropped})
    expect(page.locator("#drop")).to_have_class("drop over")
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    expect(page.locator('#upload-text[data-state="done"]')).to_have_text("314159")
    page.locator("#upload").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "web-upload-phone.png", full_page=True)


@pytest.fixture(scope="module")
def learning_server(rec, tmp_path_factory):  # noqa: F811
    """A server started as `digitrec serve --learn` is, with a sample store of its own."""
    from digitrec.learn import Store

    store = Store(tmp_path_factory.mktemp("learn") / "samples.sqlite3")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(create_app(rec, learn=store), log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(600):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", store
    srv.should_exit = True
    thread.join(10)
    sock.close()


def test_a_digit_tapped_shows_what_the_model_saw_and_takes_a_correction(browser, learning_server):
    ARTIFACTS.mkdir(exist_ok=True)
    url, store = learning_server
    context = browser.new_context(**DESKTOP)
    context.set_default_timeout(WAIT_MS)
    errors = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        expect(page.locator("#model-info")).to_contain_text("model ")
        for stroke in strokes_71(page):
            draw_with_mouse(page, stroke)
        assert reading_after(page, 2) == "71"
        page.locator("#draw-digits li").nth(1).click()
        inspect = page.locator("#draw-inspect")
        expect(inspect).to_be_visible()
        lit = """(args) => {
            const c = document.querySelector(`#draw-inspect .${args[0]}`);
            const d = c.getContext("2d").getImageData(0, 0, 28, 28).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (args[1] ? d[i] > 200 && d[i + 2] < 150 && d[i + 1] < 200 : d[i] > 150) n++;
            return n;
        }"""
        assert page.evaluate(lit, ["seen-input", False]) > 30  # the strokes of the 1, white on black
        page.wait_for_function(lit.replace("(args) =>", "() => ((args) =>") + ')(["seen-saliency", true]) > 5')
        keys = inspect.locator(".keys button")
        expect(keys).to_have_count(10)
        page.screenshot(path=ARTIFACTS / "web-inspect.png")
        keys.nth(7).click()
        expect(inspect.locator(".fix-status")).to_contain_text("Stored as 7 (read as 1)")
        page.screenshot(path=ARTIFACTS / "web-corrected.png")
    finally:
        context.close()
    assert errors == []
    samples = store.samples()
    assert [(s.label, s.predicted, s.source) for s in samples] == [(7, 1, "web")]
    assert samples[0].image.shape == (28, 28) and samples[0].image.max() > 200


def test_a_server_that_does_not_learn_says_so_instead_of_offering_corrections(open_page):
    page = open_page(**DESKTOP)
    for stroke in strokes_71(page):
        draw_with_mouse(page, stroke)
    assert reading_after(page, 2) == "71"
    page.locator("#draw-digits li").first.click()
    expect(page.locator("#draw-inspect")).to_be_visible()
    expect(page.locator("#draw-inspect .fix")).to_be_hidden()
    expect(page.locator("#draw-inspect .fix-status")).to_contain_text("--learn")
