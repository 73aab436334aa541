"""3DIEBench-style scene rendering with PyTorch3D (the only sub-package that imports pytorch3d).

`scene` holds the scene facts and latent sampling (numpy/torch only), `lights` the spot light,
`renderer` the batched rasterizer + shader with shadow maps, `sources` the object sets and
`job` the resumable, sharded dataset generation behind `ssl-eq render`.
"""
