"""Datasets: the native sharded format, the original 3DIEBench layout, view / pair / sequence datasets,
relative transformations and the Lightning datamodule.

Names are imported on first use, so `import ssl_eq.datasets` loads neither Lightning nor pytorch3d.
"""
from __future__ import annotations

from ssl_eq.utils.lazy import lazy_attributes

_EXPORTS = {
    "FORMAT_VERSION": "native", "LATENT_SCHEMAS": "native", "NativeDataset": "native", "read_manifest": "native",
    "write_manifest": "native", "write_shard": "native", "shard_name": "native", "is_shard_complete": "native",
    "list_complete_shards": "native", "stratified_split": "native",
    "make_synthetic_dataset": "synthetic",
    "relative_transform": "relative", "sequence_actions": "relative", "relative_latents": "relative",
    "ViewDataset": "views", "PairDataset": "views", "SequenceDataset": "views", "FixedPairDataset": "views",
    "FixedSequenceDataset": "views", "EpochSampler": "views", "collate": "views",
    "SSLDataModule": "datamodule", "ThreadLoader": "loader",
    "ThreeDIEBenchFolder": "threedie", "export_3diebench": "threedie", "import_3diebench": "threedie",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes("ssl_eq.datasets", _EXPORTS)
