"""The API routes for corrections and explanations: /api/samples (only with learn on), /api/explain,
and each digit's 28x28 input in /api/read."""

import base64

import numpy as np
import pytest
from fastapi.testclient import TestClient

from digitrec.learn import Store
from digitrec.web.app import create_app
from test_web import mnist_test, photo, rec  # noqa: F401  (fixtures)


@pytest.fixture
def learning(rec, tmp_path):  # noqa: F811
    store = Store(tmp_path / "samples.sqlite3")
    with TestClient(create_app(rec, learn=store)) as c:
        yield c, store


@pytest.fixture(scope="module")
def plain(rec):  # noqa: F811
    with TestClient(create_app(rec)) as c:
        yield c


def test_a_server_started_without_learn_stores_nothing(plain, mnist_test):  # noqa: F811
    images, labels = mnist_test
    r = plain.post("/api/samples", json={"digit": images[0].tolist(), "label": int(labels[0])})
    assert r.status_code == 403 and "--learn" in r.json()["detail"]
    assert plain.get("/api/samples").json() == {"learning": False, "total": 0, "counts": {}}
    assert plain.get("/api/model").json()["learning"] is False


def test_a_corrected_digit_and_a_picture_with_its_text_are_stored(learning, photo, mnist_test):  # noqa: F811
    client, store = learning
    images, _ = mnist_test
    r = client.post("/api/samples", json={"digit": images[0].tolist(), "label": 1, "predicted": 7})
    assert r.status_code == 200 and r.json()["total"] == 1 and r.json()["counts"] == {"1": 1}
    r = client.post("/api/samples", json={"image": base64.b64encode(photo).decode(), "text": "314159"})
    assert r.status_code == 200, r.text
    assert r.json()["total"] == 7 and len(r.json()["stored"]) == 6
    assert client.get("/api/samples").json() == {"learning": True, "total": 7,
                                                 "counts": {"1": 3, "3": 1, "4": 1, "5": 1, "9": 1}}
    assert [(s.label, s.predicted, s.source) for s in store.samples()][:2] == [(1, 7, "web"), (3, 3, "web")]
    assert (store.samples()[0].image == images[0]).all()


@pytest.mark.parametrize("body, words", [
    ({"digit": [[0] * 28] * 28, "label": 10}, "less than or equal to 9"),
    ({"digit": [[0] * 28] * 27, "label": 1}, "at least 28"),
    ({"label": 1}, "send"),
    ({"image": "aGVsbG8=", "text": "12"}, "cannot read the picture"),
])
def test_bad_samples_are_refused_and_nothing_is_stored(learning, body, words):
    client, store = learning
    r = client.post("/api/samples", json=body)
    assert r.status_code in (415, 422)
    assert words in str(r.json()["detail"])
    assert len(store) == 0


def test_a_picture_whose_digits_differ_from_the_text_is_refused(learning, photo):  # noqa: F811
    client, store = learning
    r = client.post("/api/samples", json={"image": base64.b64encode(photo).decode(), "text": "3141"})
    assert r.status_code == 422 and "6 digits found" in r.json()["detail"]
    assert len(store) == 0


def test_read_gives_each_digits_input_and_explain_its_saliency(plain, photo):  # noqa: F811
    r = plain.post("/api/read?inputs=true", files={"file": ("p.jpg", photo)}).json()
    assert r["text"] == "314159"
    seen = np.array(r["digits"][0]["input"])
    assert seen.shape == (28, 28) and seen.max() > 200
    e = plain.post("/api/explain", json={"image": seen.tolist()}).json()
    heat = np.array(e["saliency"])
    assert heat.shape == (28, 28) and heat.max() == 1.0
    assert e["top"][0][0] == 3
    assert heat[seen == 0].max() < heat[seen > 128].max()  # the strokes decide, not the background
    assert "input" not in plain.post("/api/read", files={"file": ("p.jpg", photo)}).json()["digits"][0]
