"""A spot light for PyTorch3D shaders: a point light with a cone, a soft edge and 1/d^2 falloff."""
from __future__ import annotations

import math

import torch
from pytorch3d.renderer.lighting import PointLights, diffuse, specular


class SpotLights(PointLights):
    """Spot lights usable wherever PyTorch3D accepts `PointLights` (e.g. `SoftPhongShader`).

    Each light (batch N) has a `location` (N, 3), a unit `direction` (N, 3) it points along,
    a full cone angle `spot_size` (N,) in radians and a soft edge `spot_blend` (N,) in [0, 1],
    following Blender: inside the cone the intensity ramps up with a smoothstep over the
    fraction `spot_blend` of (1 - cos(spot_size / 2)). With `inverse_square=True` the colour is
    an intensity and is divided by the squared distance (physical falloff); the default keeps
    PyTorch3D's unattenuated point-light behaviour.
    """

    def __init__(self, ambient_color=((0.0, 0.0, 0.0),), diffuse_color=((1.0, 1.0, 1.0),),
                 specular_color=((0.0, 0.0, 0.0),), location=((0.0, 0.0, 4.0),),
                 direction=((0.0, 0.0, -1.0),), spot_size=math.pi / 8, spot_blend=0.15,
                 inverse_square: bool = False, device="cpu") -> None:
        super().__init__(ambient_color=ambient_color, diffuse_color=diffuse_color,
                         specular_color=specular_color, location=location, device=device)
        direction = torch.as_tensor(direction, dtype=torch.float32, device=self.device).reshape(-1, 3)
        self.direction = direction / direction.norm(dim=-1, keepdim=True)
        size = torch.as_tensor(spot_size, dtype=torch.float32, device=self.device).reshape(-1)
        blend = torch.as_tensor(spot_blend, dtype=torch.float32, device=self.device).reshape(-1)
        if (size <= 0).any() or (size >= math.pi).any():
            raise ValueError("spot_size must be in (0, pi) radians")
        if (blend < 0).any() or (blend > 1).any():
            raise ValueError("spot_blend must be in [0, 1]")
        self.spot_size, self.spot_blend = size, blend
        self.inverse_square = inverse_square

    def clone(self):
        other = self.__class__(device=self.device, inverse_square=self.inverse_square)
        other.direction, other.spot_size, other.spot_blend = self.direction, self.spot_size, self.spot_blend
        return super(PointLights, self).clone(other)

    def to(self, device):
        super().to(device)
        self.direction = self.direction.to(device)
        self.spot_size, self.spot_blend = self.spot_size.to(device), self.spot_blend.to(device)
        return self

    def _per_point(self, t: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Broadcast a per-light tensor (N, ...) against points (N, ..., 3) like `reshape_location`."""
        if t.ndim == 1:
            t = t[:, None]
        extra = points.ndim - t.ndim
        return t.reshape(t.shape[:1] + (1,) * extra + t.shape[1:])

    def attenuation(self, points: torch.Tensor) -> torch.Tensor:
        """Cone mask (and 1/d^2 if enabled) at `points` (N, ..., 3) -> (N, ..., 1)."""
        to_point = points - self.reshape_location(points)
        dist = to_point.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        cos_angle = (to_point / dist * self._per_point(self.direction, points)).sum(-1, keepdim=True)
        cos_half = torch.cos(self._per_point(self.spot_size, points) / 2)
        spread = ((1 - cos_half) * self._per_point(self.spot_blend, points)).clamp_min(1e-6)
        x = ((cos_angle - cos_half) / spread).clamp(0.0, 1.0)
        mask = x * x * (3 - 2 * x)
        return mask / dist**2 if self.inverse_square else mask

    def diffuse(self, normals, points) -> torch.Tensor:
        direction = self.reshape_location(points) - points
        return diffuse(normals=normals, color=self.diffuse_color, direction=direction) * self.attenuation(points)

    def specular(self, normals, points, camera_position, shininess) -> torch.Tensor:
        direction = self.reshape_location(points) - points
        spec = specular(points=points, normals=normals, color=self.specular_color, direction=direction,
                        camera_position=camera_position, shininess=shininess)
        return spec * self.attenuation(points)
