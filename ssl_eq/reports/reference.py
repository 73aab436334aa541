"""Published numbers (DESIGN.md §5), shown beside our runs and clearly marked as from the papers."""
from __future__ import annotations

CAPTION = ("Published numbers, from the papers, at their scale (full 3DIEBench, ResNet-18, 2000 epochs); "
           "not comparable to small CPU runs.")
COLUMNS = ("method", "3DIEBench top-1 (%)", "rel. rotation R²", "source")
PUBLISHED: tuple[tuple[str, str, str, str], ...] = (
    ("VICReg", "80.48", "0.20", "seq-JEPA paper, Table 1"),
    ("SimCLR", "81.13", "0.35", "seq-JEPA paper"),
    ("BYOL", "82.90", "0.12", "seq-JEPA paper"),
    ("EquiMod", "84.29", "0.32", "seq-JEPA paper"),
    ("SIE", "77.49", "0.58", "seq-JEPA paper (SIE paper reports ≈0.73 with its own protocol)"),
    ("seq-JEPA (M=3)", "86.14", "0.71", "seq-JEPA paper"),
    ("EquiCaps 3×3", "83.24", "0.78", "EquiCaps README"),
    ("EquiCaps 3×3, rotation only, on 3DIEBench-T", "76.91", "0.73 (translation R² 0.60 object / 0.88 base frame)",
     "EquiCaps README"),
    ("EquiCaps 4×4, object frame, on 3DIEBench-T", "78.25", "0.71 (translation R² 0.62 object frame)",
     "EquiCaps README"),
    ("EquiCaps 4×4, base frame, on 3DIEBench-T", "77.88", "0.71 (translation R² 0.91 base frame)", "EquiCaps README"),
)
R2_NOTE = ("R² conventions: EquiCaps pools all outputs (1 − SS_res/SS_tot around one grand mean, our `r2_pooled`); "
           "seq-JEPA uses scikit-learn's uniform average over outputs (our `r2_uniform`).")
