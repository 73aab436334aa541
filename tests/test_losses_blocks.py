"""Shared loss blocks: the covariance term equals lightly's masked form and the reference's off-diagonal form."""
import pytest
import torch
from lightly.loss.vicreg_loss import covariance_loss

from ssl_eq.methods.blocks.losses import covariance_term


def offdiagonal_reference(z: torch.Tensor) -> torch.Tensor:
    """The SIE / VICReg reference formula: flatten()[:-1].view(n-1, n+1)[:, 1:] picks the off-diagonal."""
    z = z - z.mean(0)
    cov = z.T @ z / (z.shape[0] - 1)
    n = cov.shape[0]
    off = cov.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()
    return off.pow(2).sum() / n


@pytest.mark.parametrize("b,e", [(8, 5), (32, 64), (3, 130)])
def test_covariance_term_value_and_gradient(b, e):
    g = torch.Generator().manual_seed(b * e)
    z = (torch.randn(b, e, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, e, dtype=torch.float64))
    values, grads = [], []
    for fn in (covariance_term, covariance_loss, offdiagonal_reference):
        x = z.clone().requires_grad_(True)
        out = fn(x)
        out.backward()
        values.append(out.detach())
        grads.append(x.grad)
    for v, gr in zip(values[1:], grads[1:]):
        torch.testing.assert_close(values[0], v, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grads[0], gr, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
def test_inputs_and_weights_share_one_memory_layout(channels_last):
    """trainer.channels_last picks the layout of conv weights *and* inputs (the loader hands out channels-last)."""
    from omegaconf import OmegaConf

    from ssl_eq.methods.run import build_method, compose_config

    cfg = compose_config(["method=vicreg", "backbone=small_cnn", "data.image_size=16",
                          f"trainer.channels_last={channels_last}", "data.num_classes=3"])
    model = build_method(OmegaConf.to_container(cfg, resolve=True))
    model.setup("fit")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=fmt) for p in convs)
    loader_like = torch.rand(2, 16, 16, 3).permute(0, 3, 1, 2)  # channels-last memory, as native.py hands out
    assert model.layout(loader_like).is_contiguous(memory_format=fmt)
