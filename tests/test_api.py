"""The Python API: README's example runs as written; `load_run(R).embed` equals the features `ssl-eq probe`
extracts; input checks; the sequence aggregate equals the one the agg_linear probe computes."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch

import ssl_eq
from ssl_eq.cli import ConsoleHandler, main
from ssl_eq.datasets.synthetic import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]


def readme_python_api_example() -> str:
    """The first ```python block of README.md's "## Python API" section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API"):]
    section = section[:section.index("\n## ", 1)]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_python_api_example(), "README.md (Python API)", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "{'inv': (2, 64), 'equi': (2, 64), 'full': (2, 128)}" in out  # the shapes the README's comment shows
    assert (tmp_path / "runs" / "tiny_sie" / "probe" / "probe.json").is_file()
    report = Path("reports") / "tiny" / "report.md"
    assert str(report) in out and (tmp_path / report).is_file()


@pytest.fixture(scope="module")
def sie_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    data = make_synthetic_dataset(root / "data", num_objects=8, views=3, size=16)
    run = root / "run"
    assert main(["pretrain", "experiment=demo_sie", f"data.root={data}", f"run_dir={run}", "trainer.max_steps=2",
                 "data.batch_size=4", "trainer.enable_progress_bar=false"]) == 0
    return data, run


def test_embed_equals_the_features_ssl_eq_probe_extracts(sie_run):
    data, run = sie_run
    assert main(["probe", str(run), "--probes", "linear", "--epochs", "1"]) == 0
    cached = torch.load(run / "probe" / "features_val.pt", weights_only=True)["features"]  # (K, V, ·) object-major
    encoder = ssl_eq.load_run(run)
    views = ssl_eq.open_dataset(data, kind="view", split="val")
    batch = [views[i] for i in range(len(views))]
    images = torch.stack([b["images"] for b in batch])
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 16, 16)
    parts = encoder.embed(images)
    rows = {(int(b["object_index"]), int(b["view_index"])): i for i, b in enumerate(batch)}
    objects = cached["object_index"].tolist()
    for part in ("inv", "equi", "full"):
        mine = torch.stack([torch.stack([parts[part][rows[o, v]] for v in range(cached[f"rep/{part}"].shape[1])])
                            for o in objects])
        torch.testing.assert_close(mine, cached[f"rep/{part}"], rtol=1e-4, atol=1e-5)
    assert torch.equal(torch.stack([b["latents"] for b in batch])[rows[objects[0], 0]], cached["latents"][0, 0])


def test_the_library_logs_and_the_cli_prints(sie_run, capsys, caplog, monkeypatch):
    _, run = sie_run
    logger = logging.getLogger("ssl_eq")  # as in a program that never ran the CLI
    monkeypatch.setattr(logger, "handlers", [h for h in logger.handlers if not isinstance(h, ConsoleHandler)])
    caplog.set_level(logging.INFO, logger="ssl_eq")
    result = ssl_eq.probe(run, probes=["linear"], epochs=1)
    assert result["probes"]["linear"]["status"] == "ok" and result["selected"] == ["linear"]
    assert "features [val]" in caplog.text and capsys.readouterr().out == ""
    assert main(["probe", str(run), "--probes", "linear", "--epochs", "1"]) == 0
    assert "features [val]: reusing" in capsys.readouterr().out


def test_encoder_is_frozen_takes_uint8_or_unit_floats_and_refuses_bad_input(sie_run):
    data, run = sie_run
    encoder = ssl_eq.load_run(run, device="cpu")
    assert not encoder.model.training and not any(p.requires_grad for p in encoder.model.parameters())
    assert encoder.method == "sie" and encoder.has_predictor and sum(encoder.dims.values()) == 2 * encoder.dims["full"]
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    as_uint8, as_float = encoder.embed(images), encoder(images.float() / 255)  # calling it embeds
    for part in ("inv", "equi", "full"):
        torch.testing.assert_close(as_uint8[part], as_float[part])
        assert as_uint8[part].shape == (3, encoder.dims[part]) and not as_uint8[part].requires_grad
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encoder.embed(images.float())  # 0..255 floats: a classic mistake
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        encoder.embed(images[0].permute(1, 2, 0))  # HWC
    with pytest.raises(ValueError, match="kind"):
        ssl_eq.open_dataset(data, kind="triplet")


def test_predict_maps_view_1_towards_view_2_with_the_runs_action(sie_run):
    data, run = sie_run
    encoder = ssl_eq.load_run(run)
    pairs = ssl_eq.open_dataset(data, kind="pair", split="train", seed=3)
    items = [pairs[i] for i in range(4)]
    images = torch.stack([it["images"] for it in items])            # (4, 2, 3, H, W)
    latents = torch.stack([it["latents"] for it in items])          # (4, 2, L)
    action = encoder.action(latents[:, 0], latents[:, 1])
    torch.testing.assert_close(action, torch.stack([it["rel_rotation_quat"] for it in items]))  # the batch's action
    equi = encoder.embeddings(images[:, 0])["equi"]
    pred = encoder.predict(equi, action)
    torch.testing.assert_close(pred, encoder.model.predictor(equi, action))
    assert pred.shape == equi.shape


def test_a_method_without_predictor_says_so(tmp_path):
    data = make_synthetic_dataset(tmp_path / "data", num_objects=8, views=2, size=16)
    run = tmp_path / "vicreg"
    assert main(["pretrain", "experiment=demo_vicreg", f"data.root={data}", f"run_dir={run}", "trainer.max_steps=1",
                 "data.batch_size=2", "trainer.enable_progress_bar=false"]) == 0
    encoder = ssl_eq.load_run(run)
    with pytest.raises(ValueError, match="has no predictor"):
        encoder.predict(torch.zeros(1, 4), torch.zeros(1, 4))


def test_sequence_embed_gives_the_aggregate_the_agg_probe_uses(tmp_path):
    from ssl_eq.probes.features import extract_features
    from ssl_eq.probes.sequence import aggregate_features
    from ssl_eq.datasets.native import NativeDataset
    from ssl_eq.datasets.views import ViewDataset, collate

    data = make_synthetic_dataset(tmp_path / "data", num_objects=8, views=4, size=16)
    run = tmp_path / "seqjepa"
    assert main(["pretrain", "experiment=demo_seqjepa", f"data.root={data}", f"run_dir={run}", "trainer.max_steps=1",
                 "data.batch_size=2", "trainer.enable_progress_bar=false"]) == 0
    encoder = ssl_eq.load_run(run)
    source = NativeDataset(data)
    loader = torch.utils.data.DataLoader(ViewDataset(source, None), batch_size=16, collate_fn=collate)
    feats = extract_features(encoder.model, loader)
    sequences = torch.tensor([[0, 2, 0, 3], [1, 1, 2, 0]])  # (object, view_1..view_3)
    expected = aggregate_features(encoder.model, feats, list(source.latent_schema), sequences, chunk=8,
                                  conventions=encoder.conventions)
    images = torch.stack([source.read_views([int(r[0])] * 3, r[1:].numpy()) for r in sequences])  # (2, 3, 3, H, W)
    latents = feats["latents"][sequences[:, :1], sequences[:, 1:]]                                 # (2, 3, L)
    out = encoder.embed(images, latents=latents)
    assert out["full"].shape[:2] == (2, 3)
    torch.testing.assert_close(out["agg"], expected, rtol=1e-4, atol=1e-5)
