"""The library calls that replaced hand-written code (torchmetrics, kornia, torchvision) give the values of the
formulas they replaced, in this toolkit's conventions, and the hand-written code that stays has the reason it
states: a case where the library differs."""
from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.functional import r2_score
from torchmetrics.functional.retrieval import retrieval_reciprocal_rank

from ssl_eq.probes import metrics as M

GEN = torch.Generator().manual_seed(0)


def _cases(count: int = 50):
    """Random (N, K) regression and (N, C) classification problems of assorted sizes."""
    for _ in range(count):
        n, k, c = (int(torch.randint(lo, hi, (), generator=GEN)) for lo, hi in ((5, 200), (1, 6), (2, 12)))
        y = torch.randn(n, k, generator=GEN)
        yield y + torch.rand((), generator=GEN) * torch.randn(n, k, generator=GEN), y, \
            torch.randn(n, c, generator=GEN), torch.randint(0, c, (n,), generator=GEN)


# ---------------------------------------------------------------------------------------------- probe metrics
def test_classification_metrics_equal_the_counting_formulas():
    for _, _, logits, labels in _cases():
        c = logits.shape[1]
        for k in (1, 5):
            hits = (logits.topk(min(k, c), dim=1).indices == labels[:, None]).any(1)
            expected = hits.float().mean().item() * 100
            assert M.topk_accuracy(logits, labels, k).item() == pytest.approx(expected, abs=1e-4)
        pred = logits.argmax(1)
        counts = torch.bincount(labels * c + pred, minlength=c * c).reshape(c, c)
        assert torch.equal(M.confusion_matrix(pred, labels, c), counts)
        per_class = M.per_class_accuracy(pred, labels, c)
        totals = counts.sum(1)
        assert torch.equal(per_class.isnan(), totals == 0)  # absent classes: NaN, not torchmetrics' 0
        present = totals > 0
        expected = counts.diagonal()[present].float() / totals[present] * 100
        torch.testing.assert_close(per_class[present], expected)


def test_uniform_r2_equals_torchmetrics_where_no_output_is_near_constant():
    worst = 0.0
    for pred, y, _, _ in _cases():
        ours = M.r2_uniform(pred, y)
        assert ours.item() == pytest.approx(r2_score(pred, y, multioutput="uniform_average").item(), abs=1e-6)
        worst = max(worst, abs(ours.item() - r2_score(pred, y, multioutput="uniform_average").item()))
        ss_res, ss_tot = ((y - pred) ** 2).sum(0), ((y - y.mean(0)) ** 2).sum(0)
        assert ours.item() == pytest.approx((1 - ss_res / ss_tot).mean().item(), abs=1e-6)  # the definition
    assert worst < 1e-6


def test_uniform_r2_stays_hand_written_for_near_constant_outputs():
    """A z-only rotation group: x, y of the quaternion constant, predicted within 1e-3. scikit-learn (seq-JEPA's
    r2_score) scores those outputs 0; torchmetrics' absolute 1e-4 tolerance on Σ(y−ŷ)² scores them 1."""
    angle = torch.linspace(-3, 3, 50)
    target = torch.stack([torch.cos(angle / 2), torch.zeros(50), torch.zeros(50), torch.sin(angle / 2)], 1)
    pred = target + torch.tensor([0.0, 1e-3, -1e-3, 0.0])
    assert M.r2_uniform(pred, target).item() == pytest.approx(0.5)
    assert r2_score(pred, target, multioutput="uniform_average").item() == pytest.approx(1.0)


def test_retrieval_ranks_stay_hand_written():
    """torchmetrics' reciprocal rank gives 0 to a target whose score is ≤ 0 and splits ties; SIE's MRR ranks it."""
    views = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    query = torch.tensor([[0.0, -1.0]])  # every cosine ≤ 0; the target (view 2) scores 0, rank 1 of 3 (tie)
    rank = M.retrieval_ranks(query, views[None], torch.tensor([2]))
    assert rank.tolist() == [1]
    sims = torch.nn.functional.normalize(query, dim=-1) @ views.T
    assert retrieval_reciprocal_rank(sims[0], torch.tensor([False, False, True])).item() < 1.0


def test_geodesic_error_stays_hand_written_near_zero():
    """4·atan2(‖q̂ − q‖, ‖q̂ + q‖) resolves 1e-5 rad, where 2·acos(|⟨q̂, q⟩|) in float32 reads 0 or ~0.03°."""
    half = 0.5e-5  # a rotation of 1e-5 rad about x
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    p = torch.tensor([[math.cos(half), math.sin(half), 0.0, 0.0]])
    assert M.geodesic_error_deg(p, q).item() == pytest.approx(math.degrees(1e-5), rel=1e-3)
    acos_form = torch.rad2deg(2 * torch.acos((p * q).sum(-1).abs().clamp(max=1.0)))
    assert abs(acos_form.item() - math.degrees(1e-5)) > 1e-4


# ---------------------------------------------------------------------------------------------- geometry (kornia)
def _angles(n: int = 20000) -> torch.Tensor:
    return (torch.rand(n, 3, generator=GEN) * 2 - 1) * math.pi


def test_euler_conversions_follow_scipy_extrinsic_xyz():
    from scipy.spatial.transform import Rotation

    from ssl_eq.geometry import euler_xyz_to_matrix, euler_xyz_to_quaternion, matrix_to_euler_xyz, matrix_to_quaternion
    a = _angles()
    ref = Rotation.from_euler("xyz", a.double().numpy())  # radians, extrinsic x, then y, then z
    torch.testing.assert_close(euler_xyz_to_matrix(a).double(), torch.from_numpy(ref.as_matrix()), rtol=0, atol=2.4e-7)
    quat = torch.from_numpy(ref.as_quat()[:, [3, 0, 1, 2]])  # scipy xyzw -> wxyz, scipy's sign kept
    torch.testing.assert_close(euler_xyz_to_quaternion(a).double(), quat, rtol=0, atol=2.4e-7)
    canonical = torch.where(quat[:, :1] < 0, -quat, quat)
    torch.testing.assert_close(matrix_to_quaternion(euler_xyz_to_matrix(a)).double(), canonical, rtol=0, atol=2.4e-7)
    inside = a.clone()
    inside[:, 1] /= 2.2  # a_y strictly inside (-pi/2, pi/2): the Euler triple is unique
    back = matrix_to_euler_xyz(euler_xyz_to_matrix(inside.double()))
    torch.testing.assert_close(back, inside.double(), rtol=0, atol=1e-9)
    # gimbal lock: scipy sets a_z = 0 and puts the in-plane angle into a_x
    lock = torch.tensor([[0.4, math.pi / 2, 0.3], [0.4, -math.pi / 2, 0.3]], dtype=torch.float64)
    with pytest.warns(UserWarning, match="Gimbal lock"):
        expected = Rotation.from_matrix(euler_xyz_to_matrix(lock).numpy()).as_euler("xyz")
    torch.testing.assert_close(matrix_to_euler_xyz(euler_xyz_to_matrix(lock)), torch.from_numpy(expected),
                               rtol=0, atol=1e-6)


def test_quaternion_algebra_is_hamilton_wxyz():
    from scipy.spatial.transform import Rotation

    from ssl_eq.geometry import quaternion_conjugate, quaternion_multiply, quaternion_to_matrix
    p, q = torch.randn(2, 4000, 4, generator=GEN).unbind(0)
    ref = torch.from_numpy(Rotation.from_quat(q[:, [1, 2, 3, 0]].double().numpy()).as_matrix())
    torch.testing.assert_close(quaternion_to_matrix(q).double(), ref, rtol=0, atol=1e-6)  # any norm
    unit = torch.nn.functional.normalize(q.double(), dim=-1)
    torch.testing.assert_close(quaternion_to_matrix(unit), torch.from_numpy(
        Rotation.from_quat(unit[:, [1, 2, 3, 0]].numpy()).as_matrix()), rtol=0, atol=1e-12)
    pw, px, py, pz = p.double().unbind(-1)
    qw, qx, qy, qz = q.double().unbind(-1)
    hamilton = torch.stack([pw * qw - px * qx - py * qy - pz * qz, pw * qx + px * qw + py * qz - pz * qy,
                            pw * qy - px * qz + py * qw + pz * qx, pw * qz + px * qy - py * qx + pz * qw], -1)
    torch.testing.assert_close(quaternion_multiply(p.double(), q.double()), hamilton, rtol=0, atol=1e-12)
    # p ⊗ q is the rotation q first, then p: R(p ⊗ q) = R(p) R(q)
    torch.testing.assert_close(quaternion_to_matrix(quaternion_multiply(p.double(), q.double())),
                               quaternion_to_matrix(p.double()) @ quaternion_to_matrix(q.double()), rtol=0, atol=1e-12)
    assert torch.equal(quaternion_conjugate(p), p * torch.tensor([1.0, -1.0, -1.0, -1.0]))
    grad = torch.randn(3, 4, requires_grad=True)
    quaternion_multiply(grad, quaternion_conjugate(grad)).sum().backward()
    assert grad.grad is not None and grad.grad.abs().sum() > 0  # differentiable


def test_hsv_to_rgb_equals_colorsys():
    import colorsys

    from ssl_eq.geometry import hsv_to_rgb
    h, s, v = torch.rand(3, 5000, generator=GEN).unbind(0)
    h[:4] = torch.tensor([0.0, 1.0, 1 / 6, 0.5])
    ref = torch.tensor([colorsys.hsv_to_rgb(*hsv) for hsv in zip(h.tolist(), s.tolist(), v.tolist())],
                       dtype=torch.float64)
    torch.testing.assert_close(hsv_to_rgb(h, s, v).double(), ref, rtol=0, atol=1e-6)
    assert hsv_to_rgb(h.reshape(50, 100), 0.6, 0.6).shape == (50, 100, 3)  # any shape, scalar s / v


# ---------------------------------------------------------------------------------------------- online R² (methods)
def test_online_rotation_r2_metric_is_the_variance_weighted_r2_over_all_batches():
    """The val R² accumulated batch by batch (torchmetrics R2Score, as BaseMethod logs it) is the R² of the whole
    split with per-output means and pooled sums: 1 − Σᵢₖ(yᵢₖ−ŷᵢₖ)² / Σₖ Σᵢ(yᵢₖ−ȳₖ)²; NaN for a one-item split."""
    from ssl_eq.methods.base import SplitR2Score
    worst = 0.0
    for pred, y, _, _ in _cases(30):
        if y.shape[1] == 1 or len(y) < 10:
            continue
        metric = SplitR2Score()
        for chunk in torch.arange(len(y)).tensor_split(3):
            metric.update(pred[chunk], y[chunk])
        expected = 1 - ((y - pred) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
        worst = max(worst, abs(metric.compute().item() - expected.item()))
    assert worst < 1e-5
    one = SplitR2Score()
    one.update(torch.randn(1, 4, generator=GEN), torch.randn(1, 4, generator=GEN))
    assert one.compute().isnan()  # R² is undefined for one sample (torchmetrics raises)


# ---------------------------------------------------------------------------------------------- renderer (PyTorch3D)
def test_renderer_projection_and_boxes_are_pytorch3d_and_match_the_pinhole_formula():
    from pytorch3d.structures import Meshes

    from ssl_eq.renderers.renderer import SceneRenderer, _linear_to_srgb
    from ssl_eq.renderers.scene import RenderSettings
    renderer = SceneRenderer(RenderSettings(image_size=32), "cpu")
    verts = [torch.rand(n, 3, generator=GEN) - 0.5 for n in (7, 30, 300)]
    meshes = Meshes(verts=verts, faces=[torch.randint(0, len(v), (20, 3), generator=GEN) for v in verts])
    pix, behind = renderer._pixels(meshes)
    view = meshes.verts_packed() @ renderer._cam_r[0] + renderer._cam_t[0]  # X_view = X_world R + T
    k = renderer._projection[0]
    ndc = torch.stack([k[0, 0] * view[:, 0], k[1, 1] * view[:, 1]], -1) / view[:, 2:]  # +x left, +y up
    torch.testing.assert_close(pix, (32 * (1 - ndc) - 1) / 2, rtol=0, atol=1e-4)  # pixel centres at integers
    assert not behind.any()
    box = meshes.get_bounding_boxes()
    assert torch.equal(box, torch.stack([torch.stack([v.min(0).values, v.max(0).values], -1) for v in verts]))
    x = torch.linspace(-0.1, 1.1, 240).reshape(-1, 1, 3)
    c = x.clamp(0, 1)
    srgb = torch.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)
    torch.testing.assert_close(_linear_to_srgb(x), srgb, rtol=0, atol=1e-6)
