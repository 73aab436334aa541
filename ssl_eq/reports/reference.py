"""Published numbers (docs/reference_numbers.md), one table per source, clearly marked as from the papers.

The two sources used different protocols (resolution, backbone, R² definition) and are never mixed in one
table. Rows are plain tuples, one per published result, in the order of the source's `COLUMNS`.
"""
from __future__ import annotations

from dataclasses import dataclass

SCALE_NOTE = ("Published numbers, from the papers, at their scale (full 3DIEBench, ResNet-18, 2000 epochs); "
              "not comparable to small CPU runs.")

SIE_EQUICAPS_COLUMNS = ("method", "data", "top-1 (%)", "rotation R² (pooled)", "translation R² (pooled)", "source")
SIE_EQUICAPS_ROWS: tuple[tuple[str, ...], ...] = (
    ("EquiCaps 3×3", "3DIEBench", "83.24", "0.78", "–", "EquiCaps README"),
    ("SIE", "3DIEBench", "–", "≈ 0.73", "–", "EquiCaps abstract (0.78 − 0.05)"),
    ("CapsIE", "3DIEBench", "–", "≈ 0.74", "–", "EquiCaps abstract (0.78 − 0.04)"),
    ("EquiCaps 3×3, rotation only", "3DIEBench-T", "76.91", "0.73", "0.60 object / 0.88 base", "EquiCaps README"),
    ("EquiCaps 4×4, object frame", "3DIEBench-T", "78.25", "0.71", "0.62 object", "EquiCaps README"),
    ("EquiCaps 4×4, base frame", "3DIEBench-T", "77.88", "0.71", "0.91 base", "EquiCaps README"),
)

SEQ_JEPA_COLUMNS = ("method", "top-1 (%)", "relative rotation R² (uniform)", "individual rotation R² (uniform)")
SEQ_JEPA_ROWS: tuple[tuple[str, ...], ...] = (
    ("BYOL", "82.90", "0.12", "0.25"),
    ("SimCLR", "81.13", "0.35", "0.54"),
    ("VICReg", "80.48", "0.20", "0.36"),
    ("SEN", "83.43", "0.35", "0.57"),
    ("EquiMod", "84.29", "0.32", "0.55"),
    ("SIE", "77.49", "0.58", "0.62"),
    ("Conditional BYOL", "82.61", "0.31", "0.47"),
    ("ContextSSL (c=126)", "80.4", "0.74", "0.78"),
    ("seq-JEPA (M_train 1, M_val 1)", "84.08", "0.65", "0.69"),
    ("seq-JEPA (1, 3)", "85.31", "0.65", "0.69"),
    ("seq-JEPA (3, 3)", "86.14", "0.71", "0.74"),
    ("seq-JEPA (3, 5)", "87.41", "0.71", "0.74"),
    ("seq-JEPA without action conditioning (3, 3)", "86.05", "0.29", "0.37"),
)


@dataclass(frozen=True)
class PublishedSource:
    """One source's table: its protocol in words, the name of its R² in our probes, columns and rows."""
    title: str
    protocol: str
    r2: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


SOURCES: tuple[PublishedSource, ...] = (
    PublishedSource(
        "SIE and EquiCaps papers",
        "256 px, the SIE ResNet-18, probes on the frozen 512-d representation (our `--protocol sie_reference`), "
        "R² with one grand mean over all outputs (our `r2_pooled`).",
        "r2_pooled", SIE_EQUICAPS_COLUMNS, SIE_EQUICAPS_ROWS),
    PublishedSource(
        "seq-JEPA paper's re-runs of every method (Table 1)",
        "128 px, torchvision ResNet-18, seq-JEPA's own probes, scikit-learn's uniform-average R² (our `r2_uniform`); "
        "its SIE number (0.58) is not the SIE paper's (≈ 0.73).",
        "r2_uniform", SEQ_JEPA_COLUMNS, SEQ_JEPA_ROWS),
)
