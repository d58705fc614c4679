"""The other camera conventions of :mod:`pointmap.geometry.camera`, kornia style: the half-pixel
shift (COLMAP / nerfstudio pixel centres at +0.5) and the OpenCV <-> OpenGL axis flip, checked on
analytic cases (a point projecting to a known pixel in both conventions), batch shapes, array
kinds and round trips."""

import numpy as np
import pytest
import roma
import torch

from pointmap.geometry.camera import (
    intrinsics_from_corner_origin,
    intrinsics_to_corner_origin,
    opencv_opengl_flip,
    pixels_from_corner_origin,
    pixels_to_corner_origin,
    project,
)


def _K(fx=100.0, fy=80.0, cx=31.5, cy=23.5, skew=0.0):
    return torch.tensor([[fx, skew, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_corner_origin_of_known_pixels():
    """The top-left pixel's centre is (0, 0) in pointmap and (0.5, 0.5) with the origin at the
    image corner; the centre of a W x H image is ((W-1)/2, (H-1)/2) and (W/2, H/2)."""
    W, H = 64, 48
    uv = torch.tensor([[0.0, 0.0], [(W - 1) / 2, (H - 1) / 2], [W - 1.0, H - 1.0]])
    expect = torch.tensor([[0.5, 0.5], [W / 2, H / 2], [W - 0.5, H - 0.5]])
    assert torch.equal(pixels_to_corner_origin(uv), expect)
    assert torch.equal(pixels_from_corner_origin(expect), uv)


@pytest.mark.parametrize("skew", [0.0, 2.5])
def test_shifted_intrinsics_project_to_shifted_pixels(skew):
    """A point on the optical axis lands on the principal point, (cx, cy) in pointmap pixels and
    (cx + 0.5, cy + 0.5) with the corner origin; any point moves by exactly half a pixel."""
    K = _K(skew=skew)
    Kc = intrinsics_to_corner_origin(K)
    assert torch.equal(Kc[[0, 0, 1], [0, 1, 1]], K[[0, 0, 1], [0, 1, 1]])  # focals, skew kept
    axis = torch.tensor([[0.0, 0.0, 3.0]], dtype=torch.float64)
    assert torch.allclose(project(axis, Kc)[0], torch.tensor([[32.0, 24.0]], dtype=torch.float64))
    pts = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pts[:, 2] = pts[:, 2].abs() + 1
    assert torch.allclose(project(pts, Kc)[0], pixels_to_corner_origin(project(pts, K)[0]), atol=1e-12)
    assert torch.allclose(intrinsics_from_corner_origin(Kc), K, atol=1e-14)


def test_flip_projects_a_point_to_the_same_pixel_in_both_conventions():
    """An OpenGL camera looks along its -z and has y up: a point's pixel through the flipped pose,
    ``u = cx + fx x / -z``, ``v = cy - fy y / -z``, is its OpenCV pixel."""
    g = torch.Generator().manual_seed(1)
    cv = torch.eye(4, dtype=torch.float64)
    cv[:3, :3] = roma.rotvec_to_rotmat(0.4 * torch.randn(3, generator=g, dtype=torch.float64))
    cv[:3, 3] = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
    gl = opencv_opengl_flip(cv)
    X = torch.tensor([0.5, 0.25, 6.0, 1.0], dtype=torch.float64)  # world point in front of the camera
    x_cv, x_gl = torch.linalg.inv(cv) @ X, torch.linalg.inv(gl) @ X
    K = _K()
    uv_cv = project(x_cv[None, :3], K)[0][0]
    uv_gl = torch.stack([K[0, 2] + K[0, 0] * x_gl[0] / -x_gl[2], K[1, 2] - K[1, 1] * x_gl[1] / -x_gl[2]])
    assert x_cv[2] > 0 and x_gl[2] < 0
    assert torch.allclose(uv_cv, uv_gl, atol=1e-12)
    assert torch.equal(gl[:, 3], cv[:, 3])  # same centre
    assert torch.equal(gl[:3, :3] @ torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64), cv[:3, 2])
    assert torch.det(gl[:3, :3]) == pytest.approx(1.0)
    assert torch.equal(opencv_opengl_flip(gl), cv)  # its own inverse, exactly


@pytest.mark.parametrize("batch", [(), (1,), (3,), (2, 3)])
def test_batch_shapes_and_array_kinds(batch):
    g = torch.Generator().manual_seed(2)
    T = torch.randn(batch + (4, 4), generator=g, dtype=torch.float64)
    K = torch.randn(batch + (3, 3), generator=g, dtype=torch.float64)
    uv = torch.randn(batch + (5, 2), generator=g, dtype=torch.float64)
    for fn, x in ((opencv_opengl_flip, T), (intrinsics_to_corner_origin, K),
                  (intrinsics_from_corner_origin, K), (pixels_to_corner_origin, uv)):
        out = fn(x)
        assert isinstance(out, torch.Tensor) and out.shape == x.shape and out.dtype == x.dtype
        flat = fn(x.reshape((-1,) + x.shape[-2:])).reshape(x.shape)
        assert torch.equal(out, flat)  # element-wise over the batch
        out_np = fn(x.numpy())
        assert isinstance(out_np, np.ndarray) and np.array_equal(out_np, out.numpy())
        out32 = fn(x.float())
        assert out32.dtype == torch.float32 and fn(x.numpy().astype(np.float32)).dtype == np.float32


def test_gradcheck():
    K = _K(skew=1.0).requires_grad_()
    T = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(intrinsics_to_corner_origin, (K,))
    assert torch.autograd.gradcheck(opencv_opengl_flip, (T,))
