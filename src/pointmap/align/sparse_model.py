"""The residual model of the sparse alignment (:mod:`.sparse`): per match, the world points
of its two pixels and their 3-D distance (:func:`res3d`) or reprojection errors
(:func:`res2d`), written plainly per match (the definition), and the same batched over matches
with analytic Jacobians (:data:`JAC`; a test checks them against :func:`torch.func.jacfwd`).

Each side of a match has 11 local parameters ``L``: rotation increment (3), centre (3), log
focal (1), its 4 gathered depth anchors. A pixel ``xy`` of canonical depth ``z`` lands in the
world at ``X = R (d K^-1 [xy, 1]) + C`` with ``d = z exp(sum_a b_a anchor_a)`` (``K`` with one
focal and the principal point ``pp``: pixels of cameras with skew or ``fx != fy`` are brought to
such a camera by the driver). Pixels are float64 ``(x, y)``, centres at integers.
"""

from __future__ import annotations

import torch

from ..geometry.camera import normalize_pixels
from .lm import skew

__all__ = ["GROUP", "JAC", "NP", "bilinear", "jac2d", "jac3d", "res2d", "res3d"]

NP = 7  # per-image parameters before the anchors: rotation increment (3), centre (3), log focal (1)


def bilinear(xy: torch.Tensor, H: int, W: int, gx: int, gy: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor indices ``(M, 4)`` and bilinear weights ``(M, 4)`` of pixels ``xy (M, 2)``."""
    def axis(v: torch.Tensor, size: int, g: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if g == 1:
            z = torch.zeros_like(v, dtype=torch.long)
            return z, z, torch.zeros_like(v, dtype=torch.float64)
        t = v.double() / max(size - 1, 1) * (g - 1)
        i0 = t.floor().long().clamp(0, g - 2)
        return i0, i0 + 1, (t - i0).clamp(0, 1)

    x0, x1, fx = axis(xy[:, 0], W, gx)
    y0, y1, fy = axis(xy[:, 1], H, gy)
    idx = torch.stack([y0 * gx + x0, y0 * gx + x1, y1 * gx + x0, y1 * gx + x1], 1)
    w = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
    return idx, w


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a x b`` of two ``(3,)`` vectors (per match, under :func:`torch.func.vmap`)."""
    return torch.stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _depth_1(L: torch.Tensor, bw: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Depth of one matched pixel: canonical depth ``z`` times its anchor field (``L`` as
    :func:`_world_1` takes it)."""
    return z * (L[7:11] * bw).sum().exp()


def _world_1(L: torch.Tensor, bw: torch.Tensor, z: torch.Tensor, xy: torch.Tensor, pp: torch.Tensor,
             R0: torch.Tensor) -> torch.Tensor:
    """World point ``(3,)`` of one matched pixel ``xy (2,)`` (canonical depth ``z``, principal
    point ``pp (2,)``) from its image's 11 local parameters ``L``: rotation increment ``theta``
    of ``R0`` (the rotation is ``(I + [theta]_x) R0``, exact in value and derivative at
    ``theta = 0``, where residuals are linearised; steps are applied by the exponential map),
    centre, log focal, 4 gathered anchors with bilinear weights ``bw (4,)``."""
    f = L[6].exp()
    ray = torch.cat([normalize_pixels(xy, f, f, pp), torch.ones_like(f)[None]])
    v = R0 @ (_depth_1(L, bw, z) * ray)
    return v + _cross(L[:3], v) + L[3:6]


def _project_1(L: torch.Tensor, X: torch.Tensor, pp: torch.Tensor, R0: torch.Tensor) -> torch.Tensor:
    """Pixel ``(2,)`` of world point ``X (3,)`` in the camera of local parameters ``L``."""
    v = X - L[3:6]
    c = R0.T @ (v - _cross(L[:3], v))
    return L[6].exp() * c[:2] / c[2].clamp(min=1e-9) + pp


def res3d(L, bwi, bwj, zi, zj, xyi, xyj, ppi, ppj, Ri0, Rj0):
    """3-D residual ``(3,)`` of one match, relative to the points' mean depth (so that no
    cloud gains by shrinking: the residual is invariant to a similarity of the scene): ``L (22,)``
    local parameters of both images (each: rotation increment, centre, log focal, 4 gathered
    anchors), the rest per side as :func:`_world_1` takes them."""
    h = NP + 4
    d = 0.5 * (_depth_1(L[:h], bwi, zi) + _depth_1(L[h:], bwj, zj))
    return (_world_1(L[:h], bwi, zi, xyi, ppi, Ri0) - _world_1(L[h:], bwj, zj, xyj, ppj, Rj0)) / d


def res2d(L, bwi, bwj, zi, zj, xyi, xyj, ppi, ppj, Ri0, Rj0):
    """2-D residuals ``(4,)`` of one match (pixels): each side's point projected into the other
    image minus the matched pixel there."""
    h = NP + 4
    Xi = _world_1(L[:h], bwi, zi, xyi, ppi, Ri0)
    Xj = _world_1(L[h:], bwj, zj, xyj, ppj, Rj0)
    return torch.cat([_project_1(L[h:], Xi, ppj, Rj0) - xyj, _project_1(L[:h], Xj, ppi, Ri0) - xyi])


def _side_jac(L: torch.Tensor, bw: torch.Tensor, z: torch.Tensor, xy: torch.Tensor, pp: torch.Tensor,
              R0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched :func:`_world_1` at zero rotation increments with its analytic derivatives: world
    points ``X (m, 3)``, ``dX/dL (m, 3, 11)``, depths ``d (m,)`` and ``dd/dL (m, 11)``."""
    f = L[:, 6].exp()
    q = normalize_pixels(xy, f, f, pp)
    d = z * (L[:, 7:11] * bw).sum(-1).exp()
    ray = torch.cat([q, torch.ones_like(f)[:, None]], -1)
    v = (R0 @ (d[:, None] * ray)[..., None])[..., 0]
    m = len(L)
    J = torch.zeros(m, 3, 11, dtype=L.dtype)
    J[:, :, :3] = -skew(v)
    J[:, :, 3:6] = torch.eye(3, dtype=L.dtype)
    J[:, :, 6] = -(R0[:, :, :2] @ (d[:, None] * q)[..., None])[..., 0]
    J[:, :, 7:11] = v[:, :, None] * bw[:, None, :]
    Jd = torch.zeros(m, 11, dtype=L.dtype)
    Jd[:, 7:11] = d[:, None] * bw
    return v + L[:, 3:6], J, d, Jd


def jac3d(L, bwi, bwj, zi, zj, xyi, xyj, ppi, ppj, Ri0, Rj0) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched :func:`res3d` ``(m, 3)`` and its analytic Jacobian ``(m, 3, 22)`` (``L (m, 22)``,
    the constants batched likewise)."""
    Xi, JXi, di, Jdi = _side_jac(L[:, :11], bwi, zi, xyi, ppi, Ri0)
    Xj, JXj, dj, Jdj = _side_jac(L[:, 11:], bwj, zj, xyj, ppj, Rj0)
    D = 0.5 * (di + dj)
    r = (Xi - Xj) / D[:, None]
    J = torch.cat([JXi, -JXj], -1) / D[:, None, None]
    J -= r[:, :, None] * (0.5 * torch.cat([Jdi, Jdj], -1) / D[:, None])[:, None, :]
    return r, J


def _project_jac(X: torch.Tensor, JX: torch.Tensor, L: torch.Tensor, pp: torch.Tensor, R0: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched :func:`_project_1` of points ``X (m, 3)`` (derivatives ``JX (m, 3, 11)`` with
    respect to their own image's parameters) into the cameras ``L (m, 11)``: pixels ``(m, 2)``,
    their derivatives with respect to the points' image ``(m, 2, 11)`` and to the camera's
    ``(m, 2, 11)``."""
    w = X - L[:, 3:6]
    Rt = R0.transpose(1, 2)
    c = (Rt @ w[..., None])[..., 0]
    f = L[:, 6].exp()
    cz = c[:, 2].clamp(min=1e-9)
    P = torch.zeros(len(X), 2, 3, dtype=X.dtype)
    P[:, 0, 0] = P[:, 1, 1] = f / cz
    behind = (c[:, 2] <= 1e-9)[:, None]  # clamped depth: no derivative along it
    P[:, :, 2] = torch.where(behind, 0.0, -f[:, None] * c[:, :2] / cz[:, None] ** 2)
    PR = P @ Rt                                           # du / dX
    Jcam = torch.zeros(len(X), 2, 11, dtype=X.dtype)
    Jcam[:, :, :3] = PR @ skew(w)
    Jcam[:, :, 3:6] = -PR
    Jcam[:, :, 6] = f[:, None] * c[:, :2] / cz[:, None]
    return f[:, None] * c[:, :2] / cz[:, None] + pp, PR @ JX, Jcam


def jac2d(L, bwi, bwj, zi, zj, xyi, xyj, ppi, ppj, Ri0, Rj0) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched :func:`res2d` ``(m, 4)`` and its analytic Jacobian ``(m, 4, 22)``."""
    Li, Lj = L[:, :11], L[:, 11:]
    Xi, JXi, _, _ = _side_jac(Li, bwi, zi, xyi, ppi, Ri0)
    Xj, JXj, _, _ = _side_jac(Lj, bwj, zj, xyj, ppj, Rj0)
    ui, Jui_pt, Jui_cam = _project_jac(Xi, JXi, Lj, ppj, Rj0)  # image i's point in camera j
    uj, Juj_pt, Juj_cam = _project_jac(Xj, JXj, Li, ppi, Ri0)
    r = torch.cat([ui - xyj, uj - xyi], -1)
    J = torch.cat([torch.cat([Jui_pt, Jui_cam], -1), torch.cat([Juj_cam, Juj_pt], -1)], 1)
    return r, J


JAC = {res3d: jac3d, res2d: jac2d}  # residuals (per match, the plain definition) -> batched analytic
GROUP = {res3d: 3, res2d: 2}  # components per robust term: a 3-D distance, a pixel offset
