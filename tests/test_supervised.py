"""The supervised ceiling learns the relative rotation where it is trivially visible."""
from __future__ import annotations

import math

import torch

from ssl_eq.datasets.relative import relative_transform
from ssl_eq.methods import build_method, compose_config
from ssl_eq.methods.supervised import supervised_loss
from ssl_eq.probes.metrics import r2_pooled

SIZE, CLASSES = 8, 3


def easy_pairs(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """n pairs of views rotated about z by a_z ~ U[-pi/4, pi/4]; each view's image is uniform with
    (R, G) = 128 + 100 (cos a_z, sin a_z) and a label-coded blue channel."""
    latents = torch.zeros(n, 2, 7)
    latents[..., 2] = (torch.rand(n, 2, generator=g) - 0.5) * (math.pi / 2)
    label = torch.randint(0, CLASSES, (n,), generator=g)
    a = latents[..., 2]
    rgb = torch.stack([128 + 100 * a.cos(), 128 + 100 * a.sin(), 60.0 * label[:, None].expand(n, 2).float()], -1)
    images = rgb[..., None, None].expand(n, 2, 3, SIZE, SIZE).round().to(torch.uint8)
    return {"images": images, "label": label, **relative_transform(latents[:, 0], latents[:, 1])}


def test_loss_is_weighted_sum():
    logits, labels = torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])
    pred, target = {"rel_rotation_quat": torch.zeros(2, 4)}, {"rel_rotation_quat": torch.ones(2, 4)}
    loss, terms = supervised_loss(logits, labels, pred, target, label_weight=2.0,
                                  target_weights={"rel_rotation_quat": 0.5})
    assert torch.allclose(terms["labels"], torch.tensor(2 * math.log(3)))
    assert torch.allclose(terms["rel_rotation_quat"], torch.tensor(0.5))
    assert torch.allclose(loss, terms["labels"] + 0.5)


def test_rotation_head_reaches_high_r2_on_visible_rotation():
    torch.manual_seed(0)
    cfg = compose_config(["method=supervised", "backbone=small_cnn", "data.root=unused", f"data.image_size={SIZE}",
                          f"data.num_classes={CLASSES}", "backbone.widths=[8,16,16]",
                          "method.split={inv: 8, equi: 8}", "method.regressor_hidden=[32]"])
    model = build_method(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        batch = easy_pairs(16, g)
        views, _ = model.augment_views(batch["images"])
        out = model.step_loss(views, batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    test = easy_pairs(128, torch.Generator().manual_seed(1))
    with torch.no_grad():
        reps = [model.representations(model.preprocess(test["images"][:, i]))["equi"] for i in range(2)]
        pred = model.regressors["rel_rotation_quat"](torch.cat(reps, -1))
    varying = [0, 3]                                     # w and z vary; x = y = 0 for rotations about z
    assert r2_pooled(pred[:, varying], test["rel_rotation_quat"][:, varying]) > 0.9
    assert model.data_requirements["keys"] == ["images", "label", "rel_rotation_quat"]
