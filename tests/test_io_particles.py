"""read_particles: dispatch, image-path resolution, pickles beside a stack, and table helpers."""

import shutil
import warnings

import mrcfile
import numpy as np
import pandas as pd
import pytest
from scipy.spatial.transform import Rotation

from cryolab.errors import InputError
from cryolab.io import (
    ParticleSet,
    ctf_from_table,
    pixel_size_from_table,
    poses_from_table,
    read_cryodrgn_poses,
    read_particles,
    read_star,
    write_cryodrgn_poses,
    write_mrc,
    write_star,
)


def _raw_stack(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # old headers without the MAP id
        with mrcfile.open(path, permissive=True) as mrc:
            return np.array(mrc.data, dtype=np.float32)


def test_star_particles(shared_data):
    particles = read_particles(shared_data / "relion" / "relion31.star")
    assert isinstance(particles, ParticleSet) and len(particles) == 5
    assert particles.pixel_size_A == 2.806 and particles.images.pixel_size_A == 2.806
    assert particles.images.shape == (5, 256, 256)
    np.testing.assert_array_equal(particles.images[:], _raw_stack(shared_data / "relion" / "relion31.mrcs"))


def test_empiar_star_and_cs_give_the_same_images(shared_data):
    star = read_particles(shared_data / "relion" / "empiar_10076_7.star")
    cs = read_particles(shared_data / "relion" / "empiar_10076_7.cs")
    np.testing.assert_array_equal(star.images[:], cs.images[:])
    assert star.pixel_size_A == pytest.approx(cs.pixel_size_A, rel=1e-7)
    np.testing.assert_array_equal(star.images[2], _raw_stack(shared_data / "relion" / "empiar_10076_7.mrc")[2])


def test_stack_with_cryodrgn_pickles(shared_data, tmp_path):
    stack = shared_data / "cryodrgn" / "hand.5.mrcs"
    with pytest.raises(InputError, match="has 100 entries but there are 5 particles") as err:
        read_particles(stack, poses=shared_data / "cryodrgn" / "hand_rot_trans.pkl")
    assert "hand_rot_trans.pkl" in str(err.value)
    rot, trans = read_cryodrgn_poses(shared_data / "cryodrgn" / "hand_rot_trans.pkl")
    five = write_cryodrgn_poses(tmp_path / "five.pkl", rot[:5], trans[:5])
    particles = read_particles(stack, poses=five)
    assert particles.pixel_size_A == 1.0  # from the MRC header
    assert particles.table.attrs["cryolab_format"] == "cryodrgn"
    rotations, shifts = poses_from_table(particles.table)
    np.testing.assert_allclose(rotations.numpy(), rot[:5], atol=1e-5)
    np.testing.assert_allclose(shifts.numpy(), trans[:5] * 64 * 1.0, atol=1e-5)
    np.testing.assert_array_equal(particles.images[:], _raw_stack(stack))


def test_mrc_without_pixel_size_needs_one(shared_data):
    path = shared_data / "relion" / "empiar_10076_7.mrc"
    with pytest.raises(InputError, match="no pixel size.*--pixel-size"):
        read_particles(path)
    assert read_particles(path, pixel_size_A=1.31).pixel_size_A == 1.31


def test_image_paths_resolve_by_convention(shared_data, tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "Extract").mkdir(parents=True)
    (project / "Refine" / "job1").mkdir(parents=True)
    shutil.copy(shared_data / "relion" / "relion31.mrcs", project / "Extract" / "p.mrcs")
    table = read_star(shared_data / "relion" / "relion31.star")
    table["rlnImageName"] = [f"{i:06d}@Extract/p.mrcs" for i in range(1, 6)]
    star = write_star(project / "Refine" / "job1" / "run_data.star", table)
    monkeypatch.chdir(tmp_path)
    # found through the STAR file's parents (project/Refine/job1 -> project)
    assert read_particles(star).images.files == (project / "Extract" / "p.mrcs",)
    # a named project folder comes first
    other = tmp_path / "other"
    (other / "Extract").mkdir(parents=True)
    shutil.copy(shared_data / "relion" / "relion31.mrcs", other / "Extract" / "p.mrcs")
    assert read_particles(star, project_dir=other).images.files == (other / "Extract" / "p.mrcs",)
    # then the current directory (RELION's rule)
    monkeypatch.chdir(other)
    assert read_particles(star).images.files[0].resolve() == (other / "Extract" / "p.mrcs").resolve()
    # unresolvable: the error names the file and the folders tried
    table["rlnImageName"] = "000001@Extract/missing.mrcs"
    lost = write_star(project / "Refine" / "job1" / "lost.star", table)
    with pytest.raises(InputError, match="cannot find image file 'Extract/missing.mrcs' under any of") as err:
        read_particles(lost, project_dir=tmp_path / "nowhere")
    message = str(err.value)
    assert str(lost) in message and str(tmp_path / "nowhere") in message and str(project / "Refine") in message


def test_image_index_beyond_stack(shared_data, tmp_path):
    shutil.copy(shared_data / "relion" / "relion31.mrcs", tmp_path / "relion31.mrcs")
    table = read_star(shared_data / "relion" / "relion31.star")
    table.loc[4, "rlnImageName"] = "000009@relion31.mrcs"
    star = write_star(tmp_path / "p.star", table)
    with pytest.raises(InputError, match=r"image 9 \(1-based\) of .*relion31.mrcs requested but that stack has 5 images"):
        read_particles(star)


def test_particle_errors(shared_data, tmp_path):
    no_names = read_star(shared_data / "relion" / "relion31.star").drop(columns=["rlnImageName"])
    star = write_star(tmp_path / "nonames.star", no_names)
    with pytest.raises(InputError, match="missing column.*rlnImageName needed for images") as err:
        read_particles(star)
    assert str(star) in str(err.value)
    with pytest.raises(InputError, match="unknown particle file type '.txt'"):
        read_particles(tmp_path / "list.txt")
    with pytest.raises(InputError, match="holds poses or CTF, not images"):
        read_particles(shared_data / "cryodrgn" / "pose.star.pkl")
    # a rlnImageSize that disagrees with the images
    table = read_star(shared_data / "relion" / "relion31.star")
    table["rlnImageSize"] = 128
    shutil.copy(shared_data / "relion" / "relion31.mrcs", tmp_path / "relion31.mrcs")
    with pytest.raises(InputError, match="rlnImageSize 128 does not match the 256-pixel images"):
        read_particles(write_star(tmp_path / "size.star", table))


def test_mixed_pixel_sizes_are_an_error(shared_data):
    table = read_star(shared_data / "relion" / "relion31.6opticsgroups.star")
    with pytest.raises(InputError, match="different pixel sizes.*select one optics group"):
        pixel_size_from_table(table)
    one_group = table[table["rlnOpticsGroup"] == 2]
    assert pixel_size_from_table(one_group) == 1.24  # data_optics: group 2 has 1.24 Å pixels


def test_poses_and_ctf_helpers(shared_data, tmp_path):
    table = read_star(shared_data / "relion" / "relion31.star")
    rotations, shifts = poses_from_table(table)
    angles = table[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()
    expected = Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix().transpose(0, 2, 1)
    np.testing.assert_allclose(rotations.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(shifts.numpy()[0], [0.019324, -0.64686], rtol=1e-6)
    ctf = ctf_from_table(table)
    assert ctf["defocus_u_A"][0].item() == pytest.approx(13108.082418)
    assert ctf["cs_mm"][0].item() == pytest.approx(0.01)
    assert ctf["voltage_kV"][0].item() == 300.0 and ctf["scale"][0].item() == 1.0
    no_origin = table.drop(columns=["rlnOriginXAngst", "rlnOriginYAngst"])
    assert poses_from_table(no_origin)[1].abs().max() == 0
    with pytest.raises(InputError, match="rlnOriginYAngst needed for shifts"):
        poses_from_table(table.drop(columns=["rlnOriginYAngst"]))
    with pytest.raises(InputError, match="rlnAngleTilt needed for poses") as err:
        poses_from_table(table.drop(columns=["rlnAngleTilt"]))
    assert "relion31.star" in str(err.value)
    with pytest.raises(InputError, match="rlnDefocusV, rlnVoltage needed for CTF"):
        ctf_from_table(table.drop(columns=["rlnDefocusV", "rlnVoltage"]))


def test_star_with_pickles_replaces_poses(shared_data, tmp_path):
    write_mrc(tmp_path / "imgs.mrcs", np.zeros((3, 16, 16)), 2.0)
    table = pd.DataFrame(
        {
            "rlnImageName": [f"{i:06d}@imgs.mrcs" for i in (1, 2, 3)],
            "rlnImagePixelSize": 2.0,
            "rlnVoltage": 300.0,
        }
    )
    star = write_star(tmp_path / "p.star", table)
    rot = Rotation.random(3, random_state=0).as_matrix()
    poses = write_cryodrgn_poses(tmp_path / "pose.pkl", rot, np.full((3, 2), 0.25))
    particles = read_particles(star, poses=poses)
    np.testing.assert_allclose(particles.table["rlnOriginXAngst"], 0.25 * 16 * 2.0)
    np.testing.assert_allclose(poses_from_table(particles.table)[0].numpy(), rot, atol=1e-6)
    assert particles.table.attrs["cryolab_source"] == str(star)
