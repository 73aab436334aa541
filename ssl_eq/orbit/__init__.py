"""Orbit analysis (`ssl-eq orbit`): render objects along a one-parameter orbit of one scene latent, encode every
frame with trained runs and measure where the representation stops being invariant or equivariant.

`latents` defines the orbits, `frames` picks objects and renders them (through `ssl_eq.renderers`), `measures`
holds the per-frame measures, `plots` the figures and `runner` ties them together.
"""
