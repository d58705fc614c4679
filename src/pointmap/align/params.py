"""Parametrisations shared by the optimisers (reference conventions)."""

from __future__ import annotations

import math

import roma
import torch

__all__ = [
    "conf_transform",
    "lr_at",
    "params_to_pose",
    "pose_to_params",
    "signed_expm1",
    "signed_log1p",
]


def signed_log1p(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) log(1 + |x|)``."""
    return torch.sign(x) * torch.log1p(x.abs())


def signed_expm1(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) (exp|x| - 1)``, inverse of :func:`signed_log1p`."""
    return torch.sign(x) * torch.expm1(x.abs())


def pose_to_params(R: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """``(..., 7)`` parameters ``[unit quaternion xyzw | signed_log1p(T)]`` of rotations
    ``(..., 3, 3)`` and translations ``(..., 3)``."""
    return torch.cat([roma.rotmat_to_unitquat(R), signed_log1p(T)], dim=-1)


def params_to_pose(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation ``(..., 3, 3)`` and translation ``(..., 3)`` of ``(..., >=7)`` parameters
    (quaternion normalised)."""
    q = p[..., :4]
    q = q / q.norm(dim=-1, keepdim=True)
    return roma.unitquat_to_rotmat(q), signed_expm1(p[..., 4:7])


def conf_transform(conf: torch.Tensor, mode: str) -> torch.Tensor:
    """Loss weights of raw confidences: ``log``, ``sqrt``, ``m1`` (``c - 1``) or ``id``."""
    if mode == "log":
        return conf.clamp(min=1e-12).log()
    if mode == "sqrt":
        return conf.clamp(min=0).sqrt()
    if mode == "m1":
        return conf - 1
    return conf


def lr_at(t: int, niter: int, lr: float, lr_min: float, schedule: str) -> float:
    """Learning rate at iteration ``t`` of ``niter`` (``tau = t / niter``)."""
    tau = t / max(niter, 1)
    if schedule == "cosine":
        return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * tau)) / 2
    return lr + (lr_min - lr) * tau
