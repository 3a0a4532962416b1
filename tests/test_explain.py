"""What the network saw: occlusion and gradient saliency, feature maps, and the `digitrec explain` figure."""

import numpy as np
import pytest
from PIL import Image

import digitrec
from conftest import assert_one_line_error, digitrec_cli
from digitrec.explain import feature_maps, gradient, occlusion, torch_module


def bar_logits(x):
    """A toy model: digit 1 is read exactly as strongly as there is ink in columns 12-15."""
    ink = x[:, 0, :, 12:16].sum(axis=(1, 2))  # (N,)
    out = np.zeros((len(x), 10), np.float32)
    out[:, 1] = ink / 10  # 40 pixels of ink: a logit of 4, about 0.86 sure
    return out


def test_occlusion_lights_up_the_ink_the_answer_depends_on():
    img = np.zeros((1, 28, 28), np.uint8)
    img[0, 4:24, 13:15] = 255  # a stroke the toy model reads
    img[0, 4:8, 20:26] = 255  # ink it ignores
    heat = occlusion(bar_logits, img)[0]
    assert heat.shape == (28, 28) and heat.max() == 1.0
    assert heat[10:20, 13:15].min() > 0.5
    assert heat[4:8, 22:26].max() == 0
    assert occlusion(bar_logits, np.zeros((1, 28, 28), np.uint8)).max() == 0  # nothing drawn, nothing lit


@pytest.fixture(scope="module")
def bundled_torch():
    from digitrec.recognize import Recognizer

    return Recognizer.from_checkpoint("bundled")


def test_gradients_and_feature_maps_of_the_torch_model(bundled_torch, real_mnist):
    from digitrec.data import load_mnist

    seven = load_mnist(real_mnist).test_images[:1]  # the first test digit is a 7
    heat = gradient(bundled_torch.logits.model, seven)
    assert heat.shape == (1, 28, 28) and heat[0][seven[0] == 0].max() == 0  # gradient x input: ink only
    maps = feature_maps(torch_module(bundled_torch.logits), seven[0])
    assert [(name, a.shape) for name, a in maps] == [("conv 1", (32, 28, 28)), ("conv 2", (64, 14, 14)),
                                                     ("conv 3", (128, 7, 7))]
    assert all(a.min() >= 0 for _, a in maps)  # after the ReLU


def test_explain_writes_one_figure_with_a_row_per_digit(tmp_path, capsys):
    import cv2

    picture = np.full((120, 250), 255, np.uint8)
    for i, c in enumerate("27"):
        cv2.putText(picture, c, (30 + 110 * i, 95), cv2.FONT_HERSHEY_SIMPLEX, 3, 0, 9)
    cv2.imwrite(str(tmp_path / "27.png"), picture)
    status, out, err = digitrec_cli("explain", tmp_path / "27.png", "--out", tmp_path / "fig.png", capsys=capsys)
    assert status == 0, err
    assert "27" in out and "fig.png" in out
    fig = np.asarray(Image.open(tmp_path / "fig.png").convert("RGB")).astype(int)
    h, w, _ = fig.shape
    assert w > 1200 and h > 350  # 2 rows of crop, input, 2 saliency maps, bars and 3 layers of feature maps
    dark = (fig.max(axis=2) < 20).reshape(-1)  # the black squares of the 28x28 inputs and saliency maps
    assert dark.sum() > 20000
    status, _, err = digitrec_cli("explain", tmp_path / "nothing.png", capsys=capsys)
    assert_one_line_error(status, err, "nothing.png")
    blank = tmp_path / "blank.png"
    Image.new("L", (100, 100), 255).save(blank)
    status, _, err = digitrec_cli("explain", blank, "--out", tmp_path / "b.png", capsys=capsys)
    assert_one_line_error(status, err, "no digits")
    assert not (tmp_path / "b.png").exists()
