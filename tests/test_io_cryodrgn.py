"""cryoDRGN pickles (cryolab.io.cryodrgn): the restricted unpickler, layouts and conventions."""

import os
import pickle
import pickletools

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryolab.errors import InputError
from cryolab.io import (
    cryodrgn_ctf_to_table,
    cryodrgn_poses_to_table,
    poses_from_table,
    read_cryodrgn_ctf,
    read_cryodrgn_poses,
    read_star,
    table_to_cryodrgn_ctf,
    table_to_cryodrgn_poses,
    write_cryodrgn_ctf,
    write_cryodrgn_poses,
)


class _SystemCall:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Eval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_refuses_os_system_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = tmp_path / "evil.pkl"
    payload.write_bytes(pickle.dumps((np.zeros((1, 3, 3)), _SystemCall(f"touch {marker}"))))
    with pytest.raises(InputError, match=r"refusing to unpickle (posix|nt|os)\.system") as err:
        read_cryodrgn_poses(payload)
    assert str(payload) in str(err.value)
    assert not marker.exists()
    # pickle.load would have run it: the payload is real
    pickle.loads(payload.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("obj, name", [(_Eval(), "builtins.eval"), (pickle.PickleError(), "_pickle.PickleError")])
def test_refuses_other_globals(tmp_path, obj, name):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(InputError, match="refusing to unpickle"):
        read_cryodrgn_ctf(path)


def test_pose_star_pkl_is_relion_matrix_and_origin_over_box(shared_data):
    """cryoDRGN's pose.star.pkl came from FinalRefinement-OriginalParticles-PfCRT.star, D = 300."""
    rot_ref, trans_ref = read_cryodrgn_poses(shared_data / "cryodrgn" / "pose.star.pkl")
    table = read_star(shared_data / "relion" / "FinalRefinement-OriginalParticles-PfCRT.star")
    angles = table[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()
    A = Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix().transpose(0, 2, 1)
    assert np.abs(A - rot_ref).max() < 1e-12  # the pickle holds A itself, in float64
    rot, trans = table_to_cryodrgn_poses(table, box_size=300)
    assert np.abs(rot - rot_ref).max() < 1e-6
    origin_px = table[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy() / 1.035
    np.testing.assert_allclose(trans_ref, origin_px / 300, atol=1e-12)  # same sign, fraction of box
    np.testing.assert_allclose(trans, trans_ref, atol=1e-8)


def test_ctf_pkl_layout(shared_data):
    """ctf1.pkl: parse_ctf_star of the same STAR file with -D 300 --Apix 1.035 -w 0.1."""
    params = read_cryodrgn_ctf(shared_data / "cryodrgn" / "ctf1.pkl")
    table = read_star(shared_data / "relion" / "FinalRefinement-OriginalParticles-PfCRT.star")
    table["rlnAmplitudeContrast"] = 0.1  # not in the STAR file; cryoDRGN was told -w 0.1
    np.testing.assert_array_equal(table_to_cryodrgn_ctf(table, box_size=300), params)
    back = cryodrgn_ctf_to_table(params)
    assert back["rlnImageSize"].iloc[0] == 300
    np.testing.assert_allclose(back["rlnDefocusU"], table["rlnDefocusU"], rtol=1e-7)
    np.testing.assert_allclose(back["rlnDefocusAngle"], table["rlnDefocusAngle"], rtol=1e-6)


def test_real_pickles_read(shared_data):
    rot, trans = read_cryodrgn_poses(shared_data / "cryodrgn" / "toy_rot_trans.pkl")
    assert rot.shape == (1000, 3, 3) and trans.shape == (1000, 2)
    rot_only, none = read_cryodrgn_poses(shared_data / "cryodrgn" / "hand_rot.pkl")
    assert rot_only.shape == (100, 3, 3) and none is None
    np.testing.assert_allclose(np.linalg.det(rot_only), 1, atol=1e-5)
    assert read_cryodrgn_ctf(shared_data / "cryodrgn" / "test_ctf.pkl").shape == (1000, 9)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_pickle_protocol_of_plain_arrays_reads(tmp_path, protocol):
    params = np.arange(18, dtype=np.float32).reshape(2, 9)
    path = tmp_path / "ctf.pkl"
    path.write_bytes(pickle.dumps(params, protocol=protocol))
    np.testing.assert_array_equal(read_cryodrgn_ctf(path), params)


def test_write_read_round_trip_and_portable_format(tmp_path):
    rot = Rotation.random(20, random_state=1).as_matrix().astype(np.float32)
    trans = np.random.default_rng(0).uniform(-0.1, 0.1, (20, 2)).astype(np.float32)
    path = write_cryodrgn_poses(tmp_path / "pose.pkl", torch.from_numpy(rot), trans)
    r, t = read_cryodrgn_poses(path)
    np.testing.assert_array_equal(r, rot)
    np.testing.assert_array_equal(t, trans)
    globals_used = {arg for op, arg, _ in pickletools.genops(path.read_bytes()) if "GLOBAL" in op.name}
    assert globals_used == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    r2, t2 = pickle.loads(path.read_bytes())  # what cryoDRGN's own loader does
    np.testing.assert_array_equal(r2, rot)
    write_cryodrgn_poses(tmp_path / "rot.pkl", rot)
    assert read_cryodrgn_poses(tmp_path / "rot.pkl")[1] is None
    params = np.random.default_rng(1).uniform(0, 1, (7, 9)).astype(np.float32)
    np.testing.assert_array_equal(read_cryodrgn_ctf(write_cryodrgn_ctf(tmp_path / "ctf.pkl", params)), params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctf.pkl", "pose.pkl", "rot.pkl"]


def test_table_conversions_round_trip():
    rot = Rotation.random(30, random_state=4).as_matrix()
    trans = np.random.default_rng(5).uniform(-0.2, 0.2, (30, 2))
    table = cryodrgn_poses_to_table(rot, trans, box_size=128, pixel_size_A=1.7)
    table["rlnImagePixelSize"] = 1.7
    table["rlnImageSize"] = 128
    np.testing.assert_allclose(table["rlnOriginXAngst"], trans[:, 0] * 128 * 1.7)
    rotations, _ = poses_from_table(table)
    np.testing.assert_allclose(rotations.numpy(), rot, atol=1e-6)
    r, t = table_to_cryodrgn_poses(table)
    np.testing.assert_allclose(r, rot, atol=1e-6)
    np.testing.assert_allclose(t, trans, atol=1e-7)


def test_bad_pickles(tmp_path):
    shapes = tmp_path / "shapes.pkl"
    shapes.write_bytes(pickle.dumps((np.zeros((4, 3, 3)), np.zeros((3, 2)))))
    with pytest.raises(InputError, match=r"translations have shape \(3, 2\)"):
        read_cryodrgn_poses(shapes)
    with pytest.raises(InputError, match="CTF parameters: got a tuple, expected a numeric numpy array"):
        read_cryodrgn_ctf(shapes)
    eight = tmp_path / "eight.pkl"
    eight.write_bytes(pickle.dumps(np.zeros((4, 8), np.float32)))
    with pytest.raises(InputError, match=r"shape \(4, 8\), expected \(N, 9\)"):
        read_cryodrgn_ctf(eight)
    truncated = tmp_path / "trunc.pkl"
    truncated.write_bytes(pickle.dumps(np.zeros((10, 9)), protocol=3)[:100])
    with pytest.raises(InputError, match="cannot read pickle") as err:
        read_cryodrgn_ctf(truncated)
    assert str(truncated) in str(err.value)
    strings = tmp_path / "strings.pkl"
    strings.write_bytes(pickle.dumps(["a", "b"]))
    with pytest.raises(InputError, match="rotations: got a str, expected a numeric numpy array"):
        read_cryodrgn_poses(strings)
    with pytest.raises(InputError, match="file not found"):
        read_cryodrgn_poses(tmp_path / "missing.pkl")
