"""ssl_eq.backbones.cpu_fast: the fast CPU layers give the plain layers' values and gradients, same state dict."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ssl_eq.backbones import build_backbone
from ssl_eq.backbones.cpu_fast import _SWAPS, Conv2dGemmGrad, MaxPool2dNHWC


def test_max_pool_equals_the_plain_pool_ties_included():
    x = torch.randn(4, 16, 17, 17).relu().requires_grad_()  # many zeros: ties in most windows
    y = MaxPool2dNHWC(3, 2, 1)(x)
    ref_x = x.detach().clone().requires_grad_()
    ref = nn.MaxPool2d(3, 2, 1)(ref_x)
    assert torch.equal(y, ref) and y.is_contiguous()
    g = torch.randn_like(ref)
    y.backward(g)
    ref.backward(g)
    assert torch.equal(x.grad, ref_x.grad)


def test_gemm_weight_grad_is_the_conv_gradient():
    x = torch.randn(3, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    conv = Conv2dGemmGrad(5, 7, 3, stride=2, padding=1, bias=False).double()
    assert type(conv(x).grad_fn).__name__ == "_GemmWeightGradBackward"  # 2x2 output: the GEMM path
    assert torch.autograd.gradcheck(conv, (x,))
    assert type(conv(torch.randn(1, 5, 16, 16, dtype=torch.float64)).grad_fn).__name__ != "_GemmWeightGradBackward"


@pytest.mark.parametrize("name", ["resnet18", "resnet18_sie"])
def test_resnets_equal_their_plain_layers(name):
    torch.manual_seed(0)
    net, _ = build_backbone(name)
    plain = copy.deepcopy(net)
    for m in plain.modules():
        for base, sub in _SWAPS.items():
            if type(m) is sub:
                m.__class__ = base
    assert any(type(m) is Conv2dGemmGrad for m in net.modules())
    assert list(net.state_dict()) == list(plain.state_dict())
    x = torch.rand(4, 3, 64, 64)
    y, ref = net(x), plain(x)
    assert torch.equal(y, ref)
    y.pow(2).sum().backward()
    ref.pow(2).sum().backward()
    for p, q in zip(net.parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5 * float(q.grad.abs().max()))  # summation order
