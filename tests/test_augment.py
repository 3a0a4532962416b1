import torch

from digitrec.augment import augment_batch

from conftest import tiny_digits


def batch():
    return torch.from_numpy(tiny_digits(16, 0)[0]).float().unsqueeze(1) / 255


def test_augmentation_keeps_shape_and_range_and_is_reproducible():
    x = batch()
    a = augment_batch(x, torch.Generator().manual_seed(3))
    b = augment_batch(x, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, augment_batch(x, torch.Generator().manual_seed(4)))


def test_each_image_is_distorted_differently_but_stays_recognisable():
    x = batch()[:1].repeat(8, 1, 1, 1)
    a = augment_batch(x, torch.Generator().manual_seed(0))
    assert len({round(float(v), 3) for v in a.sum((1, 2, 3))}) == 8
    # The ink mostly stays on the canvas, and its centre moves by a few pixels at most.
    ink = x[0].sum()
    assert (a.sum((1, 2, 3)) > 0.4 * ink).all()
    coords = torch.arange(28.0)

    def centre(img):  # centre of mass of the ink, (row, column)
        img = img[0]
        return torch.stack([(img.sum(1) * coords).sum(), (img.sum(0) * coords).sum()]) / img.sum()

    assert all((centre(ai) - centre(x[0])).norm() < 5 for ai in a)
