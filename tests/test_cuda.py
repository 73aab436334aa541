"""The CUDA paths give the CPU paths' results. Run on a GPU machine by tools/device_check.sh (`-m cuda`).

SSL_EQ_CUDA_TEST_DEVICE=cpu runs the same tests with the CPU standing in for the GPU: the device check's
dry run does that, so the tests themselves are known to work before GPU minutes are spent on them.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

GPU = os.environ.get("SSL_EQ_CUDA_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(GPU.startswith("cuda") and not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU (tools/device_check.sh runs these on the lent GPU machine)")]


def test_renderer_cuda_matches_cpu(mug_mesh):
    from ssl_eq.renderers.renderer import MeshTensors, SceneRenderer
    from ssl_eq.renderers.scene import RenderSettings, sample_latents

    latents = torch.as_tensor(np.concatenate([sample_latents(0, f"o{i}", 1) for i in range(4)]), dtype=torch.float32)
    images = {}
    for dev in ("cpu", GPU):
        meshes = [MeshTensors.from_mesh(mug_mesh, dev)]
        images[dev] = SceneRenderer(RenderSettings(image_size=64), dev).render(
            meshes, torch.zeros(4, dtype=torch.long), latents)["images"].cpu().float()
    # rasterisation ties can flip single edge pixels between devices: compare the bulk
    diff = (images["cpu"] - images[GPU]).abs()
    assert diff.mean() < 1.0 and (diff > 8).float().mean() < 0.01


def _pair_case(method):
    from test_methods import fixed_batch, tiny_config
    return tiny_config(method), fixed_batch()


def _sequence_case(method):
    from test_seqjepa import sequence_batch, tiny
    return tiny(), sequence_batch()


@pytest.mark.parametrize("method,case", [("sie", _pair_case), ("vicreg", _pair_case), ("seqjepa", _sequence_case)])
def test_training_step_cuda_matches_cpu(method, case):
    from ssl_eq.methods.run import build_method

    config, batch = case(method)
    torch.manual_seed(0)
    model = build_method(config).eval()  # eval: no augmentation randomness, BN in inference mode
    x = model.preprocess(batch["images"].flatten(0, 1)).unflatten(0, batch["images"].shape[:2])
    losses = {}
    for dev in ("cpu", GPU):
        m = model.to(dev)
        with torch.no_grad():
            losses[dev] = m.step_loss(x.to(dev), {k: v.to(dev) for k, v in batch.items()}).loss.item()
    assert np.isfinite(losses[GPU])
    assert losses[GPU] == pytest.approx(losses["cpu"], rel=1e-3, abs=1e-4)


def test_preprocess_on_gpu_matches_cpu():
    from test_methods import tiny_config

    from ssl_eq.methods.run import build_method

    model = build_method(tiny_config("vicreg"))
    images = torch.randint(0, 256, (8, 3, 48, 48), dtype=torch.uint8)
    cpu = model.preprocess(images)
    gpu = model.to(GPU).preprocess(images.to(GPU)).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-5, atol=1e-5)


def test_normalize_on_gpu_matches_cpu():
    """uint8 to the device and normalised there (BaseMethod.preprocess at image_size) gives the CPU's values."""
    from test_methods import tiny_config

    from ssl_eq.methods.run import build_method

    model = build_method(tiny_config("vicreg", "trainer.channels_last=true"))
    size = model.augment.image_size
    images = torch.randint(0, 256, (8, size, size, 3), dtype=torch.uint8).permute(0, 3, 1, 2)  # as the reader
    cpu = model.preprocess(images)
    gpu = model.to(GPU).preprocess(images.to(GPU))
    assert gpu.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-6)


def test_loss_check_keeps_a_nonfinite_loss_on_the_device_without_a_host_sync(monkeypatch):
    """Off the CPU, BaseMethod.check_finite records a NaN / inf loss on the device (CUDA's sync debug mode turns any
    host sync into an error) and raise_if_nonfinite reports its step, last finite loss and terms later."""
    from test_methods import tiny_config

    from ssl_eq.methods import NonFiniteLossError, StepOutput, build_method

    model = build_method(tiny_config("vicreg")).to(GPU)
    monkeypatch.setattr(type(model), "SYNC_FREE_DEVICES", ())  # the CPU stand-in takes the device path too
    outs = [StepOutput(torch.tensor(loss, device=GPU), {"invariance": torch.tensor(loss, device=GPU)})
            for loss in (2.5, float("nan"), 3.0)]
    strict = GPU.startswith("cuda")
    if strict:
        torch.cuda.set_sync_debug_mode("error")
    try:
        for out in outs:
            model.check_finite(out)
    finally:
        if strict:
            torch.cuda.set_sync_debug_mode("default")
    with pytest.raises(NonFiniteLossError, match=r"loss nan at step 0; last finite loss: 2.5; non-finite term\(s\): "
                                                 r"invariance"):
        model.raise_if_nonfinite()
