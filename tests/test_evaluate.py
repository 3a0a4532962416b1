import numpy as np
import pytest
import torch

from digitrec.evaluate import (confusion_matrix, expected_calibration_error, fit_temperature, format_report,
                               metrics_from_logits)


def test_confusion_matrix_and_per_class_figures():
    labels = np.array([0, 0, 1, 1, 2, 2])
    logits = torch.full((6, 10), -5.0)
    for i, p in enumerate([0, 0, 1, 0, 2, 2]):  # one 1 read as 0
        logits[i, p] = 5.0
    m = metrics_from_logits(logits, labels)
    assert m["accuracy"] == pytest.approx(5 / 6) and m["n"] == 6
    cm = np.array(m["confusion_matrix"])
    assert cm[1, 0] == 1 and cm.trace() == 5 and cm.sum() == 6
    assert m["per_class"]["0"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["1"]["recall"] == pytest.approx(1 / 2)
    assert m["per_class"]["2"]["f1"] == pytest.approx(1.0)
    assert m["per_class"]["7"]["support"] == 0
    text = format_report(m)
    assert "83.33%" in text and "confusion matrix" in text


def test_confusion_matrix_rows_are_true_labels():
    cm = confusion_matrix(np.array([3]), np.array([5]))
    assert cm[3, 5] == 1 and cm.sum() == 1


def test_calibration_error():
    conf = np.array([0.9] * 10)
    assert expected_calibration_error(conf, np.array([1] * 9 + [0])) == pytest.approx(0.0)
    assert expected_calibration_error(conf, np.zeros(10)) == pytest.approx(0.9)


def test_an_ensemble_of_runs_is_a_checkpoint_that_averages_votes(tiny_mnist, tmp_path):
    from digitrec.checkpoint import combine_checkpoints, load_checkpoint
    from digitrec.data import load_mnist
    from digitrec.evaluate import predict_logits
    from digitrec.train import TrainConfig, run

    runs = []
    for seed in (0, 1):
        cfg = TrainConfig.for_model("fast", epochs=1, batch_size=32, val_split=60, seed=seed, data_dir=str(tiny_mnist))
        run(cfg, tmp_path / f"r{seed}", log=lambda s: None)
        runs.append(tmp_path / f"r{seed}")
    combine_checkpoints(runs, tmp_path / "ens")
    ens, meta = load_checkpoint(tmp_path / "ens")
    assert meta["architecture"] == "ensemble" and len(meta["members"]) == 2
    images = load_mnist(tiny_mnist).test_images
    # Members vote with their raw logits, before their own calibration.
    probs = [predict_logits(load_checkpoint(r)[0].model, images).softmax(1) for r in runs]
    assert torch.allclose(predict_logits(ens, images).softmax(1), (probs[0] + probs[1]) / 2, atol=1e-5)


def test_temperature_tames_overconfident_logits():
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (2000,))
    logits = torch.randn(2000, 10)
    logits[torch.arange(2000), labels] += 2.0  # right about 60% of the time...
    t = fit_temperature(logits * 4, labels)  # ...but four times too sure of itself
    assert t > 1.5
    assert metrics_from_logits(logits * 4 / t, labels)["ece"] < metrics_from_logits(logits * 4, labels)["ece"] / 3
