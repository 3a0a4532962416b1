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


def _stick(n: int, seven: bool = False) -> torch.Tensor:
    """n upright strokes (a plain 1), with a top bar when `seven`."""
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 4:24, 13:15] = 1.0
    if seven:
        x[:, :, 4:6, 7:15] = 1.0
    return x


def test_restyle_gives_some_ones_an_up_stroke_and_foot_and_crosses_some_sevens():
    from digitrec.augment import restyle

    g = torch.Generator().manual_seed(0)
    ones, sevens = _stick(200), _stick(200, seven=True)
    out1 = restyle(ones, torch.ones(200, dtype=torch.long), g)
    out7 = restyle(sevens, torch.full((200,), 7, dtype=torch.long), g)
    assert out1.shape == ones.shape and out1.min() >= 0 and out1.max() <= 1
    # The flag runs from the top down to the left of the stem; the foot lies along the bottom.
    flagged = out1[:, 0, 4:14, :12].sum(dim=(1, 2)) > 2
    footed = out1[:, 0, 21:25, 16:].sum(dim=(1, 2)) > 1
    assert 0.35 < flagged.float().mean() < 0.65
    assert footed.any() and not (footed & ~flagged).any()  # only flagged 1s stand on a foot
    # A crossed 7: ink right of the stem, halfway down, where the plain 7 has none.
    crossed = out7[:, 0, 11:18, 16:].sum(dim=(1, 2)) > 1
    assert 0.15 < crossed.float().mean() < 0.45
    # The original strokes are all still there.
    assert (out1 >= ones).all() and (out7 >= sevens).all()


def test_restyle_leaves_other_digits_and_blank_images_alone():
    from digitrec.augment import restyle

    g = torch.Generator().manual_seed(1)
    x = torch.cat([_stick(50), torch.zeros(10, 1, 28, 28)])
    labels = torch.cat([torch.full((50,), 4, dtype=torch.long), torch.ones(10, dtype=torch.long)])
    assert torch.equal(restyle(x, labels, g), x)
