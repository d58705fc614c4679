"""Two-image scene without optimisation (reference ``PairViewer``)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import torch

from ..errors import GraphError
from ..geometry.camera import estimate_focal, intrinsics_matrix
from ..geometry.pnp import confident_mask, pnp_ransac
from ..geometry.registration import inverse_pose
from ..predictions import PairPredictions
from ..scene import Scene

__all__ = ["pair_scene"]


def pair_scene(
    preds: PairPredictions,
    imgs: Sequence[torch.Tensor] | None = None,
    conf_threshold: float = 3.0,
    pnp_iterations: int = 100,
    reproj_error: float = 5.0,
    pnp_seed: int = 0,
) -> Scene:
    """Scene of two images from their symmetrized predictions ``(0, 1)`` and ``(1, 0)``.

    For each image ``i``: focal by Weiszfeld on its own prediction in pair ``(i, 1-i)`` with
    principal point ``(W/2, H/2)``; its pose relative to the other camera by PnP-RANSAC (SQPnP) of
    its points as predicted in pair ``(1-i, i)``, on pixels with raw confidence
    ``> conf_threshold``, or its 5 % most confident pixels when fewer pass (the reference keeps
    the threshold and gives the identity when too few pixels pass; see
    :func:`pointmap.geometry.confident_mask`); identity if PnP fails. The world frame is the
    camera of the pair whose ``mean(conf_1) * mean(conf_2)`` is larger; depths come from that
    pair's prediction.

    Args:
        preds: predictions holding both ordered pairs of images 0 and 1.
        imgs: two ``(H, W, 3)`` colour images in ``[0, 1]`` (grey when ``None``).
        pnp_seed: seed of OpenCV's RNG, set before each RANSAC PnP.

    Raises:
        GraphError: when the predictions are not the two ordered pairs of two images.
    """
    if preds.n_images != 2 or (0, 1) not in preds.pairs or (1, 0) not in preds.pairs:
        raise GraphError(
            f"pair_scene needs the symmetrized pairs (0, 1) and (1, 0) of exactly two images; got "
            f"{preds.n_images} images and pairs {preds.pairs[:6]}"
        )
    e = [preds.index(0, 1), preds.index(1, 0)]
    shapes = [tuple(preds.image_shapes[k]) for k in range(2)]
    im_conf = [torch.zeros(s) for s in shapes]
    for k, (i, j) in enumerate(preds.pairs):
        im_conf[i] = torch.maximum(im_conf[i], preds.conf_1[k].float())
        im_conf[j] = torch.maximum(im_conf[j], preds.conf_2[k].float())
    score, focals, rel = [], [], []
    for i in range(2):
        ei, eo = e[i], e[1 - i]
        score.append(float(preds.conf_1[ei].float().mean() * preds.conf_2[ei].float().mean()))
        focals.append(float(estimate_focal(preds.pts3d_1[ei].float())))
        cv2.setRNGSeed(pnp_seed)
        res = pnp_ransac(
            preds.pts3d_2_in_1[eo].float(), confident_mask(im_conf[i], conf_threshold), focal=focals[i],
            iterations=pnp_iterations, reproj_error=reproj_error,
        )
        rel.append(torch.eye(4) if res is None else res[1])
    if score[0] > score[1]:
        ref, other = 0, 1
    else:
        ref, other = 1, 0
    eref = e[ref]
    poses = torch.zeros(2, 4, 4)
    poses[ref] = torch.eye(4)
    poses[other] = rel[other]
    own = preds.pts3d_1[eref].float()
    seen = preds.pts3d_2_in_1[eref].float()
    w2c = inverse_pose(rel[other])
    seen_cam = seen @ w2c[:3, :3].T + w2c[:3, 3]
    depths = [torch.zeros(s) for s in shapes]
    depths[ref], depths[other] = own[..., 2].clone(), seen_cam[..., 2].clone()
    Ks = torch.stack([
        intrinsics_matrix(torch.tensor(focals[k]), torch.tensor([shapes[k][1] / 2, shapes[k][0] / 2]))
        for k in range(2)
    ])
    images = (
        [torch.full(s + (3,), 0.5) for s in shapes] if imgs is None
        else [torch.as_tensor(im, dtype=torch.float32) for im in imgs]
    )
    return Scene(
        imgs=images, poses=poses, intrinsics=Ks, depths=depths, confidence=im_conf,
        masks=[c > conf_threshold for c in im_conf], conf_threshold=conf_threshold,
    )
