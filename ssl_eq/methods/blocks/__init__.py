"""Building blocks that several methods share (heads, predictors, loss terms).

Modules here define no method: the registry scans only the top-level modules of `ssl_eq.methods`.
"""
