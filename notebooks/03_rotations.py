# %% [markdown]
# # 03 — Coordinate systems and rotations
#
# Study-group sessions **25 Feb 2021 (blur)** and **4 Mar 2021 (sharpen)**, "Coordinate Systems
# & Rotations". Questions are quoted and answered by computation; each section ends in
# assertions (`tests/test_notebooks.py` runs this file).
#
# cryolab's convention (docs/conventions.md, RELION's): a pose is the matrix
# `A(rot, tilt, psi) = Rz(psi) · Ry(tilt) · Rz(rot)` with
# `Rz(t) = [[c, s, 0], [-s, c, 0], [0, 0, 1]]`, `Ry(t) = [[c, 0, -s], [0, 1, 0], [s, 0, c]]`;
# A maps **map coordinates into the view frame**, and the image is
# `P(x, y) = ∫ V(Aᵀ (x, y, z)) dz`. The viewing direction in the map is
# `Aᵀ e_z = (cos rot sin tilt, sin rot sin tilt, cos tilt)`: rot is its azimuth, tilt its polar
# angle, psi the in-plane rotation applied last. Angles in degrees; quaternions `(w, x, y, z)`.

# %%
import math
import time

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from cryolab.atoms import builtin_model, project_atoms
from cryolab.report import plt, save_figure
from cryolab.rotations import (
    axis_angle_to_matrix,
    geodesic_distance_deg,
    healpix_order_for_step,
    matrix_to_quaternion,
    matrix_to_relion_euler,
    matrix_to_rotvec,
    quaternion_conjugate,
    quaternion_multiply,
    quaternion_rotate_points,
    quaternion_to_matrix,
    random_quaternions,
    random_relion_euler,
    random_rotations,
    relion_euler_to_matrix,
    rotate_points,
    rotvec_to_matrix,
    so3_grid,
    so3_grid_euler,
    viewing_direction,
)
from cryolab.lab import best_time, notebook_output_dir

OUT = notebook_output_dir()
torch.manual_seed(0)
torch.set_num_threads(1)
gen = torch.Generator().manual_seed(0)
T_START = time.perf_counter()
f64 = torch.float64


# %% [markdown]
# ## 1. RELION's Z-Y-Z Euler angles, built by hand
#
# Three elementary rotations multiplied in the order *rot first, then tilt, then psi* (the
# rightmost factor acts first on a vector). We build A from the formulas above and compare
# it with `relion_euler_to_matrix` and with SciPy (RELION's matrix is the transpose of SciPy's
# intrinsic "ZYZ" rotation: RELION's elementary rotations are *passive* — they rotate the
# coordinate frame, not the object).

# %%
def rz(t_deg):
    c, s = math.cos(math.radians(t_deg)), math.sin(math.radians(t_deg))
    return torch.tensor([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]], dtype=f64)


def ry(t_deg):
    c, s = math.cos(math.radians(t_deg)), math.sin(math.radians(t_deg))
    return torch.tensor([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]], dtype=f64)


rot, tilt, psi = 30.0, 50.0, -70.0
A_hand = rz(psi) @ ry(tilt) @ rz(rot)
A_lib = relion_euler_to_matrix(torch.tensor([rot, tilt, psi], dtype=f64))
A_scipy = torch.from_numpy(Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).as_matrix().T)
print("A(30, 50, -70) =\n", A_lib.numpy().round(4))
print("viewing direction Aᵀ e_z =", (A_lib.T @ torch.tensor([0.0, 0.0, 1.0], dtype=f64)).numpy().round(4), " viewing_direction():", viewing_direction(torch.tensor([rot, tilt, psi], dtype=f64)).numpy().round(4))

# %% [markdown]
# Every rotation matrix is orthogonal with determinant +1; its trace is `1 + 2 cos θ` (θ the
# rotation angle) and its axis is the eigenvector of eigenvalue 1. Pencil-and-paper proofs about
# rotation matrices (the Quine problems of both sessions) rest on these facts; here they are
# checked numerically.

# %%
assert torch.allclose(A_hand, A_lib, atol=1e-12) and torch.allclose(A_scipy, A_lib, atol=1e-12)
assert torch.allclose(A_lib @ A_lib.T, torch.eye(3, dtype=f64), atol=1e-12) and abs(float(torch.linalg.det(A_lib)) - 1) < 1e-12
theta = math.degrees(float(matrix_to_rotvec(A_lib).norm()))
assert abs(float(torch.trace(A_lib)) - (1 + 2 * math.cos(math.radians(theta)))) < 1e-10
axis = matrix_to_rotvec(A_lib)
assert torch.allclose(A_lib @ axis, axis, atol=1e-10), "the rotation axis is left unchanged"
assert torch.allclose(viewing_direction(torch.tensor([rot, tilt, psi], dtype=f64)), A_lib[2], atol=1e-12), "Aᵀ e_z is A's third row"

# %% [markdown]
# ## 2. What each angle does to a view
#
# Projections of adenylate kinase (`project_atoms`, 1 Å/pixel, 97-pixel box — odd, so that a
# 90° turn maps the pixel grid onto itself about the centre pixel N//2).
#
# * **psi** rotates the image in its plane: `(0, 0, 90)` is the `(0, 0, 0)` image turned by 90°
#   (clockwise as displayed with x to the right and y up — checked below);
# * **tilt** tips the viewing direction away from the map's z axis: `(0, 90, 0)` looks along x;
# * **rot** is the azimuth of the viewing direction: `(90, 90, 0)` looks along y. At tilt 0 the
#   viewing direction is z whatever rot is, so **rot and psi do the same thing** — `(90, 0, 0)`
#   is the same image as `(0, 0, 90)` (gimbal lock, section 4).

# %%
model = builtin_model("adk_open")
views = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 90.0], [90.0, 0.0, 0.0], [0.0, 90.0, 0.0], [90.0, 90.0, 0.0]])
n_box = 97
images = project_atoms(model, relion_euler_to_matrix(views), n_box, 1.0)
clockwise = torch.rot90(images[0], k=1, dims=(0, 1))  # (row=y, col=x): x → -y, a clockwise turn with y up
dirs = viewing_direction(views)

fig, axes = plt.subplots(1, 5, figsize=(15, 3.4))
ext = [-(n_box // 2) - 0.5, n_box // 2 + 0.5] * 2
for ax, img, v, d in zip(axes, images, views.tolist(), dirs.tolist()):
    ax.imshow(img, cmap="gray", origin="lower", extent=ext)
    ax.set_title(f"(rot, tilt, psi) = ({v[0]:.0f}, {v[1]:.0f}, {v[2]:.0f})\nview along ({round(d[0])}, {round(d[1])}, {round(d[2])})", fontsize=9)
    ax.set_xlabel("x (Å)")
axes[0].set_ylabel("y (Å)")
fig.tight_layout()
save_figure(fig, OUT / "03_euler_angles_views.png")

# %%
scale = float(images.abs().max())
assert float((images[1] - clockwise).abs().max()) < 1e-4 * scale, "psi = 90 turns the image clockwise (y up)"
assert float((images[2] - images[1]).abs().max()) < 1e-4 * scale, "at tilt 0, rot acts like psi"
assert float((images[3] - images[0]).abs().max()) > 0.1 * scale, "tilt changes the view itself"
assert torch.allclose(dirs[3], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6) and torch.allclose(dirs[4], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)

# %% [markdown]
# ## 3. Matrix ↔ quaternion ↔ axis-angle ↔ Euler
#
# > *[sharpen] "Find the quaternion that corresponds to a rotation of 90 deg in the cw direction
# > about the z axis."*
#
# Clockwise seen from +z (looking down at the xy plane) is −90° by the right-hand rule, so
# `q = (cos(−45°), 0, 0, sin(−45°)) = (0.7071, 0, 0, −0.7071)` (or its negative: q and −q are
# the same rotation; cryolab returns the sign with w ≥ 0).
#
# > *[sharpen] "Using pencil and paper, compute the rotation of r = ⟨1, 0, 0⟩ about the z-axis
# > by θ = 180°. Do you get ⟨−1, 0, 0⟩?"*
#
# `q = (cos 90°, 0, 0, sin 90°) = k`, `p = i`, `q⁻¹ = −k`. Then `q p = k i = j` and
# `j (−k) = −(j k) = −i`: yes, ⟨−1, 0, 0⟩. Below with `quaternion_multiply` (Hamilton product).

# %%
ez = torch.tensor([0.0, 0.0, 1.0], dtype=f64)
q_cw = matrix_to_quaternion(axis_angle_to_matrix(ez, torch.tensor(-90.0, dtype=f64)))
print("90° clockwise about z (seen from +z):", q_cw.numpy().round(4))
q_half = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=f64)
p = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=f64)
qp = quaternion_multiply(q_half, p)
qpq = quaternion_multiply(qp, quaternion_conjugate(q_half))
print("q p =", qp.numpy(), " q p q⁻¹ =", qpq.numpy())

# round trips on 1000 random rotations, float64
R = random_rotations(1000, generator=gen, dtype=f64)
q = matrix_to_quaternion(R)
v = matrix_to_rotvec(R)
e = matrix_to_relion_euler(R)
errs = {
    "quaternion": float((quaternion_to_matrix(q) - R).abs().max()),
    "rotation vector": float((rotvec_to_matrix(v) - R).abs().max()),
    "RELION Euler": float((relion_euler_to_matrix(e) - R).abs().max()),
}
print("max |round trip − R|:", {k: f"{x:.1e}" for k, x in errs.items()})
print("storage per rotation: Euler 3, rotation vector 3, quaternion 4, matrix 9 numbers")

# %%
assert torch.allclose(q_cw, torch.tensor([math.sqrt(0.5), 0.0, 0.0, -math.sqrt(0.5)], dtype=f64), atol=1e-12)
assert torch.allclose(qp, torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=f64)) and torch.allclose(qpq, torch.tensor([0.0, -1.0, 0.0, 0.0], dtype=f64))
assert torch.allclose(quaternion_to_matrix(-q), R, atol=1e-12), "q and -q are the same rotation"
assert max(errs.values()) < 1e-10

# %% [markdown]
# > *[sharpen] "If we want to rotate many xyz points … what is the efficient way? … how should
# > we efficiently store rotations versus do rotations?"*
#
# Per point, a matrix costs 9 multiplies + 6 adds; `q p q*` done smartly
# (`v' = v + 2w(u×v) + 2u×(u×v)`) about 15 multiplies + 15 adds. Composing two rotations: 27
# multiplies for matrices, 16 for quaternions. So: **store and compose** as quaternions (4
# numbers, cheap to renormalise, no gimbal lock, easy to interpolate), **convert once** to a
# matrix and apply the matrix to the many points (or Fourier samples).

# %%
points = torch.randn(1_000_000, 3)
Rm, qm = R[0].float(), q[0].float()
t_matrix = best_time(lambda: rotate_points(points, Rm), repeat=5)
t_quat = best_time(lambda: quaternion_rotate_points(points, qm), repeat=5)
Rb, qb = R.float(), q.float()
t_mat_compose = best_time(lambda: Rb @ Rb.flip(0))
t_quat_compose = best_time(lambda: quaternion_multiply(qb, qb.flip(0)))
print(f"rotate 10⁶ points: matrix {t_matrix * 1e3:.1f} ms, quaternion {t_quat * 1e3:.1f} ms")
print(f"compose 1000 pairs: matrix {t_mat_compose * 1e3:.2f} ms, quaternion {t_quat_compose * 1e3:.2f} ms")
assert torch.allclose(rotate_points(points[:1000], Rm), quaternion_rotate_points(points[:1000], qm), atol=1e-5)
assert t_matrix < t_quat, "applying a matrix to many points is cheaper than q p q*"
composed_q = quaternion_to_matrix(quaternion_multiply(q, q.flip(0)))
assert torch.allclose(composed_q, R @ R.flip(0), atol=1e-10), "R(q1 q2) = R(q1) R(q2)"

# %% [markdown]
# > *[sharpen] "Unpack the equation for ∂p'/∂q. Would this equation ever be useful in cryoEM?"*
#
# Yes, wherever a pose is refined by **local, gradient-based optimisation**: e.g. cryoDRGN's
# pose SGD, or aligning an atomic model to a map. Global searches use grids (section 6) because
# the likelihood over poses has many local maxima. Autograd differentiates `q p q*` for us. Below:
# recover an unknown rotation of the ADK atoms (plus 0.5 Å noise) by gradient descent on an
# unnormalised quaternion, starting from the identity.

# %%
xyz = torch.tensor(model.coords_A, dtype=torch.float32)
xyz = xyz - xyz.mean(0)
truth = random_rotations(1, generator=gen)[0]
target = rotate_points(xyz, truth) + 0.5 * torch.randn_like(xyz)
q_fit = torch.tensor([1.0, 0.0, 0.0, 0.0], requires_grad=True)
opt = torch.optim.Adam([q_fit], lr=0.05)
for step in range(300):
    opt.zero_grad()
    loss = ((quaternion_rotate_points(xyz, q_fit / q_fit.norm()) - target) ** 2).mean()
    loss.backward()
    opt.step()
fit_error = float(geodesic_distance_deg(quaternion_to_matrix(q_fit.detach()), truth))
print(f"gradient descent on q: final RMS residual {loss.item() ** 0.5:.2f} Å, angle to the true rotation {fit_error:.3f}°")
assert fit_error < 0.5

# %% [markdown]
# ## 4. Gimbal lock at tilt 0
#
# At tilt = 0, `Ry(0) = I` and `A = Rz(psi) Rz(rot) = Rz(rot + psi)`: only the sum is defined,
# one degree of freedom is lost. `matrix_to_relion_euler` then puts the whole in-plane angle into
# psi and returns rot = 0, as RELION does. Near tilt 0 the Euler angles are *ill-conditioned*:
# the Jacobian ∂A/∂(rot, tilt, psi) loses rank, so an optimiser working in Euler angles stalls
# there and small changes of the rotation need huge changes of rot and psi.

# %%
A_locked = relion_euler_to_matrix(torch.tensor([[30.0, 0.0, 20.0], [50.0, 0.0, 0.0], [0.0, 0.0, 50.0]], dtype=f64))
recovered = matrix_to_relion_euler(A_locked[0])
print("(30, 0, 20) → matrix → Euler:", recovered.numpy().round(6))


def jacobian_singular_values(angles):
    jac = torch.autograd.functional.jacobian(lambda a: relion_euler_to_matrix(a).reshape(9), torch.tensor(angles, dtype=f64))
    return torch.linalg.svdvals(jac)


sv_locked, sv_free = jacobian_singular_values([30.0, 0.0, 20.0]), jacobian_singular_values([30.0, 45.0, 20.0])
print("singular values of ∂A/∂angles at tilt 0:", sv_locked.numpy().round(5), " at tilt 45:", sv_free.numpy().round(5))
close_a = relion_euler_to_matrix(torch.tensor([0.0, 0.5, 0.0], dtype=f64))
close_b = relion_euler_to_matrix(torch.tensor([90.0, 0.5, -90.0], dtype=f64))
print(f"(0, 0.5, 0) and (90, 0.5, -90): Euler angles differ by 90° twice, rotations by {float(geodesic_distance_deg(close_a, close_b)):.2f}°")

# %%
assert torch.allclose(A_locked[0], A_locked[1], atol=1e-12) and torch.allclose(A_locked[0], A_locked[2], atol=1e-12)
assert torch.allclose(recovered, torch.tensor([0.0, 0.0, 50.0], dtype=f64), atol=1e-6)
assert float(sv_locked[-1]) < 1e-10 < float(sv_free[-1]), "rank 2 at tilt 0, rank 3 elsewhere"
assert float(geodesic_distance_deg(close_a, close_b)) < 1.0, "Euler-angle differences are not distances"

# %% [markdown]
# ## 5. Rotations do not commute
#
# A quarter turn about x then about z is not a quarter turn about z then about x. (Rotations
# about the *same* axis do commute: they are 2D rotations.)

# %%
ex = torch.tensor([1.0, 0.0, 0.0], dtype=f64)
Rx90 = axis_angle_to_matrix(ex, torch.tensor(90.0, dtype=f64))
Rz90 = axis_angle_to_matrix(ez, torch.tensor(90.0, dtype=f64))
zx, xz = Rz90 @ Rx90, Rx90 @ Rz90
difference = float(geodesic_distance_deg(zx, xz))
print(f"Rz(90)·Rx(90) vs Rx(90)·Rz(90): {difference:.1f}° apart")
print("e_y under Rz·Rx:", (zx @ torch.tensor([0.0, 1.0, 0.0], dtype=f64)).numpy().round(3), "  under Rx·Rz:", (xz @ torch.tensor([0.0, 1.0, 0.0], dtype=f64)).numpy().round(3))
Rz30 = axis_angle_to_matrix(ez, torch.tensor(30.0, dtype=f64))
assert difference > 90
assert torch.allclose(Rz30 @ Rz90, Rz90 @ Rz30, atol=1e-12)
# RELION's elementary Rz(t) is the active rotation by -t (passive convention)
assert torch.allclose(rz(90.0), axis_angle_to_matrix(ez, torch.tensor(-90.0, dtype=f64)), atol=1e-12)

# %% [markdown]
# ## 6. Uniform sampling on SO(3): why uniform Euler angles are not uniform
#
# The uniform ("Haar") measure on rotations in Euler coordinates is
# `sin(tilt) d rot d tilt d psi`: the viewing directions must cover the sphere evenly, and a
# band of tilt near the poles is a small cap of the sphere. Drawing tilt uniformly in [0°, 180°]
# therefore piles up views at the poles. `random_relion_euler` draws `tilt = arccos(U(-1, 1))`
# instead; `random_rotations` normalises Gaussian 4-vectors (uniform quaternions on S³).
# Checks: the fraction of viewing directions within 30° of either pole should be
# `1 - cos 30° = 0.134` (naive: 60/180 = 0.333); and the rotation angle θ of uniform rotations
# has density `(1 - cos θ)/π` on [0, π] — small rotations are rare — with mean
# `π/2 + 2/π` = 126.5°.

# %%
n_samples = 20000
naive = torch.stack([torch.rand(n_samples, generator=gen) * 360 - 180, torch.rand(n_samples, generator=gen) * 180, torch.rand(n_samples, generator=gen) * 360 - 180], dim=-1)
haar = random_relion_euler(n_samples, generator=gen)
haar_from_quat = matrix_to_relion_euler(quaternion_to_matrix(random_quaternions(n_samples, generator=gen)))


def polar_fraction(angles):
    t = angles[:, 1]
    return float(((t < 30) | (t > 150)).float().mean())


fractions = {"naive uniform Euler": polar_fraction(naive), "random_relion_euler": polar_fraction(haar), "uniform quaternions": polar_fraction(haar_from_quat)}
print("fraction of views within 30° of a pole:", {k: round(x, 3) for k, x in fractions.items()}, " expected Haar 0.134")
angle_deg = torch.rad2deg(matrix_to_rotvec(random_rotations(n_samples, generator=gen, dtype=f64)).norm(dim=-1))
print(f"mean rotation angle of random_rotations: {float(angle_deg.mean()):.1f}° (theory {math.degrees(math.pi / 2 + 2 / math.pi):.1f}°)")

fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
bins = np.linspace(0, 180, 37)
axes[0].hist(naive[:, 1].numpy(), bins=bins, density=True, alpha=0.6, label="tilt ~ U(0°, 180°)")
axes[0].hist(haar[:, 1].numpy(), bins=bins, density=True, alpha=0.6, label="tilt = arccos U(-1, 1)")
tt = np.linspace(0, 180, 200)
axes[0].plot(tt, np.sin(np.radians(tt)) / 2 * np.pi / 180, "k-", label="sin(tilt)/2 (Haar)")
axes[0].set_xlabel("tilt (°)")
axes[0].set_ylabel("density (1/°)")
axes[0].legend(fontsize=7)
for ax, ang, title in ((axes[1], naive, "naive: uniform Euler angles"), (axes[2], haar, "Haar: random_relion_euler")):
    ax.plot(ang[:3000, 0], np.cos(np.radians(ang[:3000, 1].numpy())), ".", ms=1.5)
    ax.set_xlabel("rot = azimuth of the viewing direction (°)")
    ax.set_title(title + "\n(equal-area axes: uniform on the sphere = uniform here)", fontsize=9)
axes[1].set_ylabel("cos(tilt) = z of the viewing direction")
fig.tight_layout()
save_figure(fig, OUT / "03_uniform_so3_sampling.png")

# %%
assert abs(fractions["naive uniform Euler"] - 1 / 3) < 0.02
assert abs(fractions["random_relion_euler"] - (1 - math.cos(math.radians(30)))) < 0.01
assert abs(fractions["uniform quaternions"] - (1 - math.cos(math.radians(30)))) < 0.01
assert abs(float(angle_deg.mean()) - math.degrees(math.pi / 2 + 2 / math.pi)) < 1.0
# uniform viewing directions: z = cos(tilt) is uniform on [-1, 1], so its mean is 0 and variance 1/3
z = viewing_direction(haar)[:, 2]
assert abs(float(z.mean())) < 0.02 and abs(float(z.var()) - 1 / 3) < 0.01

# %% [markdown]
# ## 7. HEALPix grids and the angular step
#
# Exhaustive searches need a *deterministic*, nearly uniform grid. RELION uses HEALPix for the
# viewing directions: order k has `nside = 2^k` and `12 nside²` equal-area pixels, each of solid
# angle `4π / (12 nside²)`, i.e. a spacing of `√(4π/12)/nside` rad ≈ 58.6°/nside (RELION quotes
# `60°/nside`); each direction is combined with `6 nside` in-plane angles psi. So the SO(3)
# grid has `72 · 8^k` rotations: halving the step multiplies the work by 8.
#
# We measure the grid's quality with **geodesic distances** — the angle of the relative
# rotation `aᵀb`, the natural distance on SO(3) (unlike differences of Euler angles,
# section 4): for random rotations, the distance to the nearest grid point.

# %%
for step in (30.0, 15.0, 7.5, 3.75, 1.8):
    order = healpix_order_for_step(step)
    print(f"step {step:5.2f}° → HEALPix order {order}: {12 * 4**order:6d} directions × {6 * 2**order:3d} psi = {72 * 8**order:9d} rotations")
grid = so3_grid(30.0)
probe = random_rotations(2000, generator=gen)
nearest = geodesic_distance_deg(probe[:, None], grid[None]).min(dim=1).values
print(f"30° grid ({grid.shape[0]} rotations): distance of a random rotation to its nearest grid point: mean {float(nearest.mean()):.1f}°, max {float(nearest.max()):.1f}°")

# spacing of the viewing directions of the order-2 grid (nominal 15°)
dirs_15 = viewing_direction(so3_grid_euler(15.0)[::24])  # 24 psi per direction at order 2
cosines = dirs_15 @ dirs_15.T
cosines.fill_diagonal_(-1)
nn_angle = torch.rad2deg(torch.arccos(cosines.max(dim=1).values.clamp(max=1)))
print(f"order-2 directions ({dirs_15.shape[0]}): nearest-neighbour angle mean {float(nn_angle.mean()):.1f}° (nominal 15°)")

# %%
assert grid.shape[0] == 576 and so3_grid(7.5).shape[0] == 36864
assert healpix_order_for_step(7.5) == 3 and healpix_order_for_step(1.8) == 5
assert float(nearest.max()) < 30.0, "every rotation lies within one step of the grid"
assert 10.0 < float(nearest.mean()) < 18.0, "mean distance ≈ step / 2.1"
assert dirs_15.shape[0] == 192 and abs(float(nn_angle.mean()) - 15.0) < 3.0

# %% [markdown]
# ## 8. Euler angles from a matrix: Slabaugh's algorithm
#
# > *[blur] "Implement the pseudo-code in Figure 1 of Slabaugh, Computing Euler angles from a
# > rotation matrix."*
#
# Slabaugh uses a different convention, `R = Rz(φ) Ry(θ) Rx(ψ)` (active, "yaw-pitch-roll"), and
# reads the angles off single entries: `R31 = −sin θ`, then ψ from `(R32, R33)` and φ from
# `(R21, R11)`, with a special case when `cos θ = 0` — the same gimbal lock as RELION's at tilt 0.
# Written out below and checked against SciPy's intrinsic "ZYX" angles. (For RELION's convention
# use `matrix_to_relion_euler`, which also handles the near-lock region accurately.)

# %%
def slabaugh_euler(r):
    """Slabaugh (1999), Fig. 1: (psi, theta, phi) in radians for R = Rz(phi) Ry(theta) Rx(psi); one solution."""
    r = np.asarray(r)
    if abs(abs(r[2, 0]) - 1) > 1e-12:
        theta = -math.asin(r[2, 0])  # the other solution is pi - theta
        c = math.cos(theta)
        psi = math.atan2(r[2, 1] / c, r[2, 2] / c)
        phi = math.atan2(r[1, 0] / c, r[0, 0] / c)
    else:  # gimbal lock: phi is arbitrary, set it to 0
        phi = 0.0
        if r[2, 0] < 0:  # R31 = -1
            theta = math.pi / 2
            psi = phi + math.atan2(r[0, 1], r[0, 2])
        else:
            theta = -math.pi / 2
            psi = -phi + math.atan2(-r[0, 1], -r[0, 2])
    return psi, theta, phi


worst = 0.0
for Rk in random_rotations(200, generator=gen, dtype=f64).numpy():
    psi_, theta_, phi_ = slabaugh_euler(Rk)
    rebuilt = Rotation.from_euler("ZYX", [phi_, theta_, psi_]).as_matrix()
    worst = max(worst, float(np.abs(rebuilt - Rk).max()))
    ref = Rotation.from_matrix(Rk).as_euler("ZYX")
    assert np.allclose([phi_, theta_, psi_], ref, atol=1e-8)
locked = Rotation.from_euler("ZYX", [0.3, math.pi / 2, 0.5]).as_matrix()
psi_l, theta_l, phi_l = slabaugh_euler(locked)
assert np.allclose(Rotation.from_euler("ZYX", [phi_l, theta_l, psi_l]).as_matrix(), locked, atol=1e-12), "the gimbal branch rebuilds R"
print(f"Slabaugh's algorithm: max |R(angles) - R| over 200 random rotations = {worst:.1e}; gimbal-lock branch OK")
assert worst < 1e-12

elapsed = time.perf_counter() - T_START
print(f"notebook ran in {elapsed:.1f} s")
assert elapsed < 300, "budget: < 60 s on 2 idle cores; this guard only catches blow-ups"
