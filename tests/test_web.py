"""The HTTP API and the page's files, through FastAPI's TestClient: good pictures, bad input, limits."""

import asyncio
import base64
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import digitrec
from digitrec.cli import main
from digitrec.data import load_mnist
from digitrec.synth import Style, compose
from digitrec.web.app import MAX_CLASSIFY, STATIC, create_app


@pytest.fixture(scope="module")
def rec(model_dir):
    return digitrec.load(model_dir)


@pytest.fixture(scope="module")
def client(rec):
    with TestClient(create_app(rec)) as c:
        yield c


@pytest.fixture(scope="module")
def mnist_test(real_mnist):
    mnist = load_mnist(real_mnist, download=False)
    return mnist.test_images[:2000], mnist.test_labels[:2000]


@pytest.fixture(scope="module")
def photo(rec, mnist_test) -> bytes:
    """A JPEG photo of the number 314159 in MNIST test digits that the model reads surely on their own."""
    images, labels = mnist_test
    probs = rec.classify(images)
    sure = (probs.argmax(1) == labels) & (probs.max(1) > 0.99)
    digits = [images[sure & (labels == int(c))][i] for i, c in enumerate("314159")]
    sample = compose([digits], [[int(c) for c in "314159"]], Style(scale=4, light=0.3, noise=3),
                     np.random.default_rng(0))
    return encode(sample.image, "JPEG", quality=90)


def encode(pixels: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **kw)
    return buf.getvalue()


def upload(client, data: bytes, name: str = "photo.jpg", query: str = ""):
    return client.post(f"/api/read{query}", files={"file": (name, data, "application/octet-stream")})


def asgi(app, path: str, method: str = "GET", headers: dict | None = None, chunks: tuple[bytes, ...] = (b"",)):
    """One request straight to the ASGI app, its path taken as is; -> (status, body, body chunks it read)."""
    messages, read = [], 0

    async def receive():
        nonlocal read
        if read == len(chunks):
            return {"type": "http.disconnect"}
        read += 1
        return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}

    async def send(message):
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return messages[0]["status"], body, read


# ---------------------------------------------------------------------------------------------------
# Reading pictures


def test_an_uploaded_photo_reads_as_predict_json_prints_it(client, rec, photo, model_dir, tmp_path, capsys,
                                                           monkeypatch):
    answer = upload(client, photo, "photo.jpg")
    assert answer.status_code == 200
    assert answer.json()["text"] == "314159"

    (tmp_path / "photo.jpg").write_bytes(photo)
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--json", "photo.jpg"] + ([] if model_dir is None else ["--model", str(model_dir)])) == 0
    assert answer.json() == json.loads(capsys.readouterr().out)


def test_json_with_base64_or_a_data_url_reads_the_same(client, photo):
    by_upload = upload(client, photo).json()
    plain = client.post("/api/read", json={"image": base64.b64encode(photo).decode()}).json()
    url = client.post("/api/read", json={"image": "data:image/jpeg;base64," + base64.b64encode(photo).decode(),
                                         "file": "mine.jpg"}).json()
    assert plain == {k: v for k, v in by_upload.items() if k != "file"}
    assert url == {**by_upload, "file": "mine.jpg"}


def test_annotated_picture_comes_back_with_the_reading(client, photo):
    answer = upload(client, photo, query="?annotate=true&top_k=5").json()
    assert answer["text"] == "314159" and all(len(d["top"]) == 5 for d in answer["digits"])
    head, _, data = answer["annotated"].partition(",")
    assert head in ("data:image/png;base64", "data:image/jpeg;base64")
    annotated = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(int)
    assert annotated.shape[:2] == Image.open(io.BytesIO(photo)).size[::-1]
    x, y, w, h = answer["digits"][0]["box"]
    # the box is drawn in a strong colour on the grey paper, on its left edge
    edge = annotated[y + h // 2, max(0, x - 4):x + 4]
    assert (edge.max(axis=1) - edge.min(axis=1)).max() > 100


def test_a_blank_drawing_reads_as_no_digits(client):
    answer = upload(client, encode(np.full((280, 560), 255, np.uint8)), "drawing.png")
    assert answer.status_code == 200 and answer.json() == {"file": "drawing.png", "text": "", "digits": []}


def test_an_animated_gif_says_only_its_first_frame_was_read(client):
    frames = [Image.fromarray(np.full((60, 60), v, np.uint8)) for v in (255, 0)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    answer = upload(client, buf.getvalue(), "moving.gif").json()
    assert "first frame" in answer["notes"][0]


def test_concurrent_requests_share_the_model_and_all_read_right(client, photo):
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: upload(client, photo).json()["text"], range(16)))
    assert answers == ["314159"] * 16


# ---------------------------------------------------------------------------------------------------
# Bad input: a status and a message, never a crash


def png_with_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims another size: a decompression bomb's calling card."""
    data = bytearray(encode(np.zeros((1, 1), np.uint8)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize("kwargs, status, message", [
    ({"files": {"file": ("notes.txt", b"3141 is pi", "text/plain")}}, 415, "not an image"),
    ({"files": {"file": ("empty.png", b"", "image/png")}}, 415, "empty"),
    ({"files": {"file": ("cut.png", encode(np.zeros((100, 100), np.uint8))[:60], "image/png")}}, 422, "corrupt"),
    ({"files": {"picture": ("a.png", b"x", "image/png")}}, 422, "field 'file'"),
    ({"content": b'{"image": ', "headers": {"content-type": "application/json"}}, 422, "JSON"),
    ({"json": {"picture": "abc"}}, 422, "Field required"),
    ({"json": {"image": "not base64!"}}, 422, "base64"),
    ({"json": {"image": 3}}, 422, "string"),
    ({"content": b"\x89PNG", "headers": {"content-type": "image/png"}}, 415, "multipart/form-data"),
])
def test_bad_requests_get_a_status_and_a_message(client, kwargs, status, message):
    answer = client.post("/api/read", **kwargs)
    assert answer.status_code == status
    assert message in json.dumps(answer.json()["detail"])


@pytest.mark.parametrize("query", ["?top_k=0", "?top_k=11", "?top_k=two", "?annotate=maybe"])
def test_bad_options_are_refused(client, photo, query):
    assert upload(client, photo, query=query).status_code == 422


def test_uploads_over_the_byte_limit_get_413(rec):
    small = TestClient(create_app(rec, max_upload_bytes=20_000))
    noise = np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8)
    answer = upload(small, encode(noise), "noise.png")
    assert answer.status_code == 413 and "0.02 MB limit" in answer.json()["detail"]
    answer = small.post("/api/read", json={"image": base64.b64encode(encode(noise)).decode()})
    assert answer.status_code == 413
    assert upload(small, encode(np.full((50, 50), 255, np.uint8))).status_code == 200


def test_a_large_upload_is_refused_without_being_read_whole(rec):
    app = create_app(rec, max_upload_bytes=100_000)
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
    chunks = (head,) + (b"x" * 65536,) * 200  # 13 MB, sent without a length as a browser or curl may
    status, body, read = asgi(app, "/api/read", "POST", {"content-type": "multipart/form-data; boundary=b"}, chunks)
    assert status == 413 and "0.1 MB limit" in json.loads(body)["detail"]
    assert read < 5
    status, _, read = asgi(app, "/api/read", "POST", {"content-type": "multipart/form-data; boundary=b",
                                                      "content-length": str(sum(map(len, chunks)))}, chunks)
    assert (status, read) == (413, 0)


def test_pictures_over_the_pixel_limit_get_413_before_decoding(rec):
    small = TestClient(create_app(rec, max_pixels=10_000))
    answer = upload(small, encode(np.full((200, 200), 255, np.uint8)), "big.png")
    assert answer.status_code == 413 and "200x200 pixels" in answer.json()["detail"]
    answer = upload(small, png_with_size(60_000, 60_000), "bomb.png")
    assert answer.status_code == 413 and "megapixel limit" in answer.json()["detail"]
    assert upload(small, encode(np.full((50, 50), 255, np.uint8))).status_code == 200


# ---------------------------------------------------------------------------------------------------
# Classifying ready-made 28x28 digits


def test_classify_returns_the_models_probabilities(client, rec, mnist_test):
    images, labels = mnist_test
    answer = client.post("/api/classify", json={"images": images[:20].tolist()})
    assert answer.status_code == 200
    body = answer.json()
    probs = np.array(body["probabilities"])
    assert probs.shape == (20, 10) and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert np.allclose(probs, rec.classify(images[:20]), atol=1e-5)
    assert body["labels"] == probs.argmax(1).tolist()
    assert np.mean(np.array(body["labels"]) == labels[:20]) >= 0.9


@pytest.mark.parametrize("images", [
    [],
    np.zeros((MAX_CLASSIFY + 1, 28, 28), int).tolist(),
    np.zeros((1, 27, 28), int).tolist(),
    np.full((1, 28, 28), 256).tolist(),
    [[["a"] * 28] * 28],
    "0" * 784,
])
def test_classify_refuses_what_is_not_a_list_of_28x28_digits(client, images):
    answer = client.post("/api/classify", json={"images": images})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"][:2] == ["body", "images"]


# ---------------------------------------------------------------------------------------------------
# Health, model, docs, the page and its files


def test_health_and_model(client, rec):
    assert client.get("/api/health").json() == {"status": "ok"}
    model = client.get("/api/model").json()
    assert model["name"] == rec.meta["architecture"] and model["version"] == digitrec.__version__
    assert 0.9 < model["test_accuracy"] <= 1
    assert model["limits"] == {"max_upload_bytes": 10_000_000, "max_pixels": 40_000_000, "max_classify": MAX_CLASSIFY}


def test_openapi_documents_both_ways_to_send_a_picture(client):
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]["/api/read"]["post"]["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert {"/api/classify", "/api/health", "/api/model"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_the_page_and_its_files_need_nothing_from_the_internet(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="pad"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("index.html", "app.js", "style.css"):
        served = client.get(f"/static/{name}")
        assert served.status_code == 200
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", served.text, re.I), name
    assert client.get("/static/app.js").headers["content-type"].startswith(("text/javascript", "application/javascript"))


@pytest.mark.parametrize("path", ["/static/../app.py", "/static/../../cli.py", "/static/%2e%2e/app.py",
                                  "/static/..%2fapp.py", "/static//etc/passwd", "/static/../../../../etc/passwd"])
def test_static_files_do_not_reach_outside_their_folder(client, path):
    assert asgi(client.app, path)[0] == 404
    assert (STATIC.parent / "app.py").is_file()


# ---------------------------------------------------------------------------------------------------
# digitrec serve


def serve_cli(*args, capsys):
    try:
        status = main(["serve", *map(str, args)])
    except SystemExit as e:
        status = e.code
    return status, *capsys.readouterr()


def test_serve_refuses_a_bad_run_dir_and_a_busy_port(tmp_path, capsys):
    status, out, err = serve_cli("--port", "0", "--model", tmp_path / "nothing", capsys=capsys)
    assert status == 2 and err.strip() == f"digitrec serve: error: {tmp_path / 'nothing'}: no such run directory"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        status, out, err = serve_cli("--port", port, capsys=capsys)
    assert status == 2 and err.strip() == f"digitrec serve: error: port {port} on 127.0.0.1 is already in use; choose another with --port"
    status, out, err = serve_cli("--port", 70000, capsys=capsys)
    assert status == 2 and err.count("\n") == 1


def test_serve_answers_on_loopback_until_stopped(model_dir, photo):
    args = [sys.executable, "-m", "digitrec.cli", "serve", "--port", "0", "--max-upload-mb", "1"]
    proc = subprocess.Popen(args + ([] if model_dir is None else ["--model", str(model_dir)]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        with httpx.Client(base_url=url, timeout=30) as http:
            assert http.get("/api/health").json() == {"status": "ok"}
            assert http.post("/api/read", files={"file": ("p.jpg", photo)}).json()["text"] == "314159"
            assert http.get("/api/model").json()["limits"]["max_upload_bytes"] == 1_000_000
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert "interrupted" in proc.stderr.read()
