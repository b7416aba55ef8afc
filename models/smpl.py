"""SMPL posing as a pure ``nn.Module`` (no file I/O): AIST++ parameters -> vertices and joints.

Load the model arrays with :func:`dancegen.storage.body_model.load_body_model` and pass them in.
Outputs are in AIST++ world units: AIST++ stores ``smpl_trans`` already multiplied by
``smpl_scaling``, so ``world = (smpl(pose) + trans / scaling) * scaling``.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import smplx
import torch
from smplx.utils import Struct

from dancegen.storage.body_model import BodyModelData

# The 24 SMPL joints in model order (smplx's names; joints 22/23 are SMPL's hand joints).
SMPL_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)
# The 21 vertex landmarks smplx appends after the 24 joints (indices 24..44 of ``joints``).
SMPL_LANDMARK_NAMES: tuple[str, ...] = (
    "nose", "right_eye", "left_eye", "right_ear", "left_ear",
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe",
    "right_heel",
    "left_thumb", "left_index", "left_middle", "left_ring", "left_pinky",
    "right_thumb", "right_index", "right_middle", "right_ring", "right_pinky",
)


def vertex_part_labels(weights: np.ndarray) -> np.ndarray:
    """SMPL's part segmentation: per vertex, 1 + the joint with the largest skinning weight.

    Returns (V,) uint8 in 1..24, so that 0 is free for the background in label images.
    """
    return (np.asarray(weights).argmax(axis=1) + 1).astype(np.uint8)


class SMPLBody(torch.nn.Module):
    """SMPL with per-call parameters: batch size is whatever the inputs have.

    Buffers (template, blend shapes, regressor, weights, faces) follow ``.to(device)``; the
    inputs are moved to the module's device and dtype.
    """

    def __init__(self, data: BodyModelData, num_betas: int = 10) -> None:
        super().__init__()
        struct = Struct(
            v_template=data.v_template, shapedirs=data.shapedirs, posedirs=data.posedirs,
            J_regressor=data.J_regressor, weights=data.weights,
            kintree_table=data.kintree_table, f=data.faces,
        )
        # smplx prints a warning for models with fewer than 300 shape directions (all SMPL
        # releases have 10); it is noise here, so it is swallowed.
        with contextlib.redirect_stdout(io.StringIO()):
            self.smpl = smplx.SMPL(
                model_path="", data_struct=struct, num_betas=num_betas,
                create_betas=False, create_global_orient=False, create_body_pose=False,
                create_transl=False,
            )

    @property
    def faces(self) -> torch.Tensor:
        """(13776, 3) int64 triangle indices (smplx's buffer; follows the module's device)."""
        return self.smpl.faces_tensor

    @property
    def num_betas(self) -> int:
        """Number of shape coefficients ``forward`` takes."""
        return self.smpl.num_betas

    def forward(
        self,
        poses: torch.Tensor,
        trans: torch.Tensor,
        scaling: torch.Tensor,
        betas: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pose the body.

        Args:
            poses: (B, 72) axis-angle, root first (AIST++ ``smpl_poses``).
            trans: (B, 3) root translation in scaled units (AIST++ ``smpl_trans``).
            scaling: (B,) or (B, 1) AIST++ ``smpl_scaling``.
            betas: (B, num_betas) or (1, num_betas) shape; zeros when None.

        Returns:
            vertices (B, 6890, 3) and joints (B, 45, 3) in world units: the 24 SMPL joints
            then the 21 landmarks of ``SMPL_LANDMARK_NAMES``.
        """
        reference = self.smpl.v_template
        poses, trans = poses.to(reference), trans.to(reference)
        scaling = scaling.to(reference).reshape(-1, 1, 1)
        batch = poses.shape[0]
        if betas is None:
            betas = reference.new_zeros(batch, self.num_betas)
        output = self.smpl(betas=betas.to(reference).expand(batch, -1),
                           global_orient=poses[:, :3], body_pose=poses[:, 3:])
        offset = trans[:, None, :] / scaling
        return (output.vertices + offset) * scaling, (output.joints + offset) * scaling
