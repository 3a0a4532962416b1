import pytest
import torch

from digitrec.errors import UsageError
from digitrec.models import create_model, get_recipe, list_models


def test_the_three_promised_models_are_registered():
    assert {"baseline", "fast", "accurate"} <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_every_model_maps_digits_to_ten_logits_and_learns(name):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.rand(4, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert create_model(name).eval()(x[:1]).shape == (1, 10)  # one digit at a time, as reading does
    assert get_recipe(name).epochs >= 1


def test_unknown_model_names_the_choices():
    with pytest.raises(UsageError, match="unknown model 'resnet'.*accurate"):
        create_model("resnet")
