"""`python tests/ddp_record.py OUT ARGS...`: `ssl-eq ARGS...` with hooks that save, on every rank, the gradients
of the first optimizer step (after DDP's all-reduce) to OUT/grad0_rank<r>.pt and the final weights to
OUT/final_rank<r>.pt. A script (not `python -c`) because Lightning's DDP launcher re-runs it for each rank."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from ssl_eq.cli import main
from ssl_eq.methods.base import BaseMethod

OUT = Path(sys.argv[1])


def save_first_gradients(self: BaseMethod, optimizer: torch.optim.Optimizer) -> None:
    if self.global_step == 0:
        grads = {n: p.grad.detach().clone() for n, p in self.named_parameters() if p.grad is not None}
        torch.save(grads, OUT / f"grad0_rank{self.global_rank}.pt")


def save_final_weights(self: BaseMethod) -> None:
    torch.save({k: v.detach().clone() for k, v in self.state_dict().items()}, OUT / f"final_rank{self.global_rank}.pt")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    BaseMethod.on_before_optimizer_step = save_first_gradients
    BaseMethod.on_train_end = save_final_weights
    sys.exit(main(sys.argv[2:]))
