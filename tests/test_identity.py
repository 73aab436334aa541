"""Checkpoint identity follows the weights, not the file's bytes."""
import torch

from ssl_eq.utils.identity import state_dict_digest, weights_digest


def test_same_weights_rewritten_keep_their_digest(tmp_path):
    state = {"a.weight": torch.randn(3, 4), "b.bias": torch.zeros(2, dtype=torch.float64)}
    torch.save({"state_dict": state, "epoch": 1, "optimizer_states": [{"step": 5}]}, tmp_path / "one.ckpt")
    torch.save({"state_dict": dict(reversed(list(state.items()))), "epoch": 9}, tmp_path / "two.ckpt")
    assert (tmp_path / "one.ckpt").read_bytes() != (tmp_path / "two.ckpt").read_bytes()
    assert weights_digest(tmp_path / "one.ckpt") == weights_digest(tmp_path / "two.ckpt")


def test_any_change_of_a_tensor_changes_the_digest():
    state = {"w": torch.zeros(4)}
    base = state_dict_digest(state)
    assert state_dict_digest({"w": torch.zeros(4).clone().index_fill_(0, torch.tensor([2]), 1e-12)}) != base
    assert state_dict_digest({"w": torch.zeros(2, 2)}) != base          # same bytes, other shape
    assert state_dict_digest({"w": torch.zeros(4, dtype=torch.int32)}) != base  # same bytes, other dtype
    assert state_dict_digest({"v": torch.zeros(4)}) != base              # renamed
