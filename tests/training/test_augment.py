"""Augmentation: seeded, small, no flips unless asked."""

import torch

from cxrkit.training.augment import augment_batch


def test_same_generator_seed_same_batch_and_identity_when_off():
    x = torch.rand(4, 1, 32, 32)
    a = augment_batch(x, torch.Generator().manual_seed(1))
    b = augment_batch(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(augment_batch(x, torch.Generator(), rotate=0, shift=0, scale=0), x)


def test_no_flip_by_default_keeps_a_left_sided_spot_left():
    x = torch.zeros(16, 1, 32, 32)
    x[:, :, 14:18, 4:8] = 1.0  # a bright spot on the image's left
    out = augment_batch(x, torch.Generator().manual_seed(0))
    cols = out.sum(dim=(1, 2)).argmax(dim=1)
    assert (cols < 16).all()
    flipped = augment_batch(x, torch.Generator().manual_seed(0), hflip=True)
    assert (flipped.sum(dim=(1, 2)).argmax(dim=1) >= 16).any()
