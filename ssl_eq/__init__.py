"""ssl_eq: invariant / equivariant self-supervised learning toolkit."""
__version__ = "0.1.0"
