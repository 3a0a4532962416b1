import subprocess
import sys

import pytest
import torch

from digitrec.models import create_model
from digitrec.optim import AdamW


def groups(model):
    return [{"params": [p for p in model.parameters() if p.dim() > 1], "weight_decay": 5e-4},
            {"params": [p for p in model.parameters() if p.dim() <= 1], "weight_decay": 0.0}]


def train_steps(model, opt, steps, lr=None):
    g = torch.Generator().manual_seed(1)
    for i in range(steps):
        if lr is not None:
            for group in opt.param_groups:
                group["lr"] = lr * (i + 1) / steps
        x, y = torch.rand(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def test_same_weights_as_torch_adamw():
    torch.manual_seed(0)
    ours, theirs = create_model("fast"), create_model("fast")
    theirs.load_state_dict(ours.state_dict())
    train_steps(ours, AdamW(groups(ours), lr=3e-3), 15, lr=3e-3)
    train_steps(theirs, torch.optim.AdamW(groups(theirs), lr=3e-3), 15, lr=3e-3)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert any((p != q).any() for p, q in zip(ours.parameters(), create_model("fast").parameters()))


def test_state_round_trip_continues_identically():
    torch.manual_seed(0)
    a = create_model("fast")
    opt_a = AdamW(groups(a), lr=1e-3)
    train_steps(a, opt_a, 3)
    b = create_model("fast")
    b.load_state_dict(a.state_dict())
    opt_b = AdamW(groups(b), lr=1e-3)
    opt_b.load_state_dict(opt_a.state_dict())
    train_steps(a, opt_a, 3)
    train_steps(b, opt_b, 3)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_state_of_another_model_is_refused():
    opt = AdamW(create_model("fast").parameters(), lr=1e-3)
    other = create_model("baseline")
    opt_other = AdamW(other.parameters(), lr=1e-3)
    train_steps(other, opt_other, 1)
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(opt_other.state_dict())


def test_training_does_not_import_the_compiler(tiny_mnist, tmp_path):
    # torch.optim pulls in torch._dynamo (seconds of start-up); training must not need it.
    code = ("import sys; from digitrec.train import TrainConfig, run; "
            f"run(TrainConfig.for_model('fast', epochs=1, dry_run=True, val_split=20, data_dir={str(tiny_mnist)!r}), "
            f"{str(tmp_path / 'run')!r}); print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
