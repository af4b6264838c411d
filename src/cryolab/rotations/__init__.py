"""Rotations: RELION Euler angles, matrices, quaternions, rotation vectors, random and grid samples.

Conventions (docs/conventions.md, "Rotations and projection"):

- The canonical form is RELION's matrix ``A(rot, tilt, psi) = Rz(psi) · Ry(tilt) · Rz(rot)``,
  ``(..., 3, 3)``, mapping map coordinates ``(x, y, z)`` into the view frame; angles in degrees.
- Quaternions are scalar-first ``(w, x, y, z)``; rotation vectors are axis × angle in radians.
  Both describe active rotations (SciPy's meaning); converting A to either and back is exact.
- Inputs may be numpy arrays, sequences or tensors; results are torch tensors, float32 by
  default, float64 when a float64 torch tensor comes in.
"""

from cryolab.rotations.axis_angle import (
    axis_angle_to_matrix,
    matrix_to_rotvec,
    rotvec_to_matrix,
    rotvec_to_quaternion,
)
from cryolab.rotations.euler import (
    inplane_rotation_matrix,
    matrix_to_relion_euler,
    relion_euler_to_matrix,
    viewing_direction,
)
from cryolab.rotations.geometry import geodesic_distance_deg, rotate_points
from cryolab.rotations.quaternions import (
    canonical_quaternion_sign,
    matrix_to_quaternion,
    quaternion_conjugate,
    quaternion_multiply,
    quaternion_rotate_points,
    quaternion_to_matrix,
)
from cryolab.rotations.sampling import (
    healpix_order_for_step,
    inplane_angles,
    inplane_rotations,
    random_quaternions,
    random_relion_euler,
    random_rotations,
    so3_grid,
    so3_grid_euler,
)

__all__ = [
    "axis_angle_to_matrix",
    "canonical_quaternion_sign",
    "geodesic_distance_deg",
    "healpix_order_for_step",
    "inplane_angles",
    "inplane_rotation_matrix",
    "inplane_rotations",
    "matrix_to_quaternion",
    "matrix_to_relion_euler",
    "matrix_to_rotvec",
    "quaternion_conjugate",
    "quaternion_multiply",
    "quaternion_rotate_points",
    "quaternion_to_matrix",
    "random_quaternions",
    "random_relion_euler",
    "random_rotations",
    "relion_euler_to_matrix",
    "rotate_points",
    "rotvec_to_matrix",
    "rotvec_to_quaternion",
    "so3_grid",
    "so3_grid_euler",
    "viewing_direction",
]
