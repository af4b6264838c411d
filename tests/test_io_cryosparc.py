"""cryoSPARC .cs files (cryolab.io.cryosparc): values, and the pose/shift convention pinned by
files from the same particles (RELION STAR, cryoDRGN's parse_pose_csparc output)."""

import pickle

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryolab.errors import InputError
from cryolab.io import (
    cryosparc_rotvec_to_matrix,
    matrix_to_cryosparc_rotvec,
    poses_from_table,
    read_cryosparc,
    read_star,
    table_to_cryodrgn_poses,
    write_star,
)


@pytest.fixture(scope="module")
def t20s(shared_data):
    path = shared_data / "cryosparc" / "t20s_cryosparc_P9_J209_000_particles.cs"
    return np.load(path), read_cryosparc(path)


def test_t20s_values_against_raw_fields(t20s):
    raw, table = t20s
    assert len(table) == len(raw) == 11764
    assert table.attrs["cryolab_format"] == "cryosparc"
    np.testing.assert_array_equal(table["rlnDefocusU"], raw["ctf/df1_A"].astype(np.float64))
    np.testing.assert_array_equal(table["rlnDefocusV"], raw["ctf/df2_A"].astype(np.float64))
    np.testing.assert_allclose(table["rlnDefocusAngle"], np.rad2deg(raw["ctf/df_angle_rad"].astype(np.float64)))
    assert (table["rlnVoltage"] == 300).all() and (table["rlnImageSize"] == 256).all()
    np.testing.assert_allclose(table["rlnImagePixelSize"], 1.0273438, rtol=1e-7)
    i = 5
    path = raw["blob/path"][i].decode()
    assert table["rlnImageName"][i] == f"{raw['blob/idx'][i] + 1:06d}@{path}"
    assert table["rlnImageName"][0].startswith("000001@J204/extract/")
    np.testing.assert_array_equal(table["rlnRandomSubset"], raw["alignments3D/split"] + 1)


def test_t20s_poses_are_transposed_rotvec_matrices(t20s):
    raw, table = t20s
    rotations, shifts = poses_from_table(table)
    rotvec = raw["alignments3D/pose"].astype(np.float64)
    expected = Rotation.from_rotvec(rotvec).as_matrix().transpose(0, 2, 1)  # A = R(v)^T
    assert np.abs(rotations.numpy() - expected).max() < 1e-6
    psize = raw["alignments3D/psize_A"].astype(np.float64)[:, None]
    np.testing.assert_allclose(shifts.numpy(), raw["alignments3D/shift"] * psize, rtol=1e-6, atol=1e-6)


def test_agrees_with_cryodrgn_parse_pose_csparc(shared_data):
    """cryoDRGN's pose.cs.pkl came from this .cs file (D = 180): rotations A and shift/D."""
    table = read_cryosparc(shared_data / "cryosparc" / "cryosparc_P12_J24_001_particles.cs")
    rot_ref, trans_ref = pickle.load(open(shared_data / "cryodrgn" / "pose.cs.pkl", "rb"))
    rot, trans = table_to_cryodrgn_poses(table)
    assert np.abs(rot - rot_ref).max() < 2e-6  # measured 4.2e-7 (float32)
    assert np.abs(trans - trans_ref).max() < 1e-7  # measured 7.5e-9
    # the other reading (A = R(v), not transposed) is far off: the test can tell them apart
    raw = np.load(shared_data / "cryosparc" / "cryosparc_P12_J24_001_particles.cs")
    untransposed = Rotation.from_rotvec(raw["alignments3D/pose"].astype(np.float64)).as_matrix()
    assert np.abs(untransposed - rot_ref).max() > 0.5


def test_empiar_pair_matches_star(shared_data):
    """empiar_10076_7.cs and .star describe the same 7 particles (CTF and images; no poses)."""
    cs = read_cryosparc(shared_data / "relion" / "empiar_10076_7.cs")
    star = read_star(shared_data / "relion" / "empiar_10076_7.star")
    for column, atol in [
        ("rlnDefocusU", 1e-3),  # float32 in the .cs: measured 3.9e-4 Å
        ("rlnDefocusV", 1e-3),
        ("rlnDefocusAngle", 1e-6),
        ("rlnVoltage", 0),
        ("rlnSphericalAberration", 1e-6),
        ("rlnAmplitudeContrast", 1e-6),
    ]:
        np.testing.assert_allclose(cs[column], star[column], rtol=0, atol=atol, err_msg=column)
    # 5 µm / 38168x = 1.30999 Å (STAR) vs blob/psize_A 1.3099979 (float32)
    np.testing.assert_allclose(cs["rlnImagePixelSize"], star["rlnImagePixelSize"], rtol=1e-7)
    assert list(cs["rlnImageName"]) == [f"{i:06d}@empiar_10076_7.mrc" for i in range(1, 8)]
    assert [n.split("@")[0] for n in star["rlnImageName"]] == [str(i) for i in range(1, 8)]
    assert "rlnAngleRot" not in cs.columns
    with pytest.raises(InputError, match=r"no poses \(alignments3D/pose\)") as err:
        poses_from_table(cs)
    assert "empiar_10076_7.cs" in str(err.value)


def test_imported_path_marker_and_optics_groups(shared_data):
    table = read_cryosparc(shared_data / "cryosparc" / "cryosparc_J2_particles_exported.cs")
    assert table["rlnImageName"][0] == "000001@J1/imported/000090334788266266069_18jam15b_0345_ali_DW.mrcs"
    assert "rlnAngleRot" not in table.columns  # 2D alignments only
    empiar = read_cryosparc(shared_data / "relion" / "empiar_10076_7.cs")
    assert (empiar["rlnOpticsGroup"] == 1).all() and (empiar["rlnOpticsGroupName"] == "exp_group_23").all()


def test_cs_table_written_as_star(shared_data, tmp_path):
    table = read_cryosparc(shared_data / "cryosparc" / "cryosparc_P12_J24_001_particles.cs")
    back = read_star(write_star(tmp_path / "from_cs.star", table))
    assert back.attrs["cryolab_format"] == "relion3.1"
    for column in table.columns:
        np.testing.assert_array_equal(back[column].to_numpy(), table[column].to_numpy(), err_msg=column)


def test_rotvec_conversions_round_trip():
    rotvec = torch.tensor(Rotation.random(50, random_state=3).as_rotvec(), dtype=torch.float64)
    A = cryosparc_rotvec_to_matrix(rotvec)
    np.testing.assert_allclose(A.numpy(), Rotation.from_rotvec(-rotvec.numpy()).as_matrix(), atol=1e-12)
    back = matrix_to_cryosparc_rotvec(A)
    np.testing.assert_allclose(back.numpy(), rotvec.numpy(), atol=1e-9)


def test_cs_errors(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_cryosparc(tmp_path / "none.cs")
    text = tmp_path / "text.cs"
    text.write_text("not numpy at all\n")
    with pytest.raises(InputError, match="cryoSPARC") as err:
        read_cryosparc(text)
    assert str(text) in str(err.value)
    objects = tmp_path / "objects.cs"
    with open(objects, "wb") as fh:
        np.save(fh, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="cryoSPARC"):
        read_cryosparc(objects)
    plain = tmp_path / "plain.cs"
    with open(plain, "wb") as fh:
        np.save(fh, np.zeros(3))
    with pytest.raises(InputError, match="structured array"):
        read_cryosparc(plain)
    no_px = tmp_path / "nopx.cs"
    with open(no_px, "wb") as fh:
        np.save(fh, np.zeros(2, dtype=[("ctf/df1_A", "<f4")]))
    with pytest.raises(InputError, match="no pixel size"):
        read_cryosparc(no_px)
    assert (read_cryosparc(no_px, pixel_size_A=1.5)["rlnImagePixelSize"] == 1.5).all()
