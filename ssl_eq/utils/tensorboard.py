"""PNG figures a person looks at, also shown in TensorBoard's Images tab."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def add_pngs(writer: Any, pngs: list[Path], prefix: str, step: int = 0) -> None:
    """Each PNG file as the image `prefix/<file stem>` of a torch SummaryWriter (uint8 RGB, HWC)."""
    from PIL import Image

    for png in pngs:
        with Image.open(png) as im:
            writer.add_image(f"{prefix}/{Path(png).stem}", np.asarray(im.convert("RGB")), step, dataformats="HWC")


def log_pngs(log_dir: Path, pngs: list[Path], prefix: str, step: int = 0) -> None:
    """add_pngs into a new event file of the TensorBoard folder `log_dir` (e.g. RUN/probe/tb)."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(log_dir)) as writer:
        add_pngs(writer, pngs, prefix, step)
