"""RELION STAR particle files (cryolab.io.star)."""

import warnings

import numpy as np
import pandas as pd
import pytest
import starfile

from cryolab.errors import InputError
from cryolab.io import parse_image_names, read_star, require_columns, write_star


def _raw(path):
    return starfile.read(path, always_dict=True)


def test_relion31_values_and_optics_merge(shared_data):
    path = shared_data / "relion" / "relion31.star"
    table = read_star(path)
    assert table.attrs["cryolab_format"] == "relion3.1"
    assert len(table) == 5
    first = table.iloc[0]
    # spot checks against the text of the file
    assert first["rlnDefocusU"] == 13108.082418
    assert first["rlnOriginXAngst"] == 0.019324 and first["rlnOriginYAngst"] == -0.64686
    assert first["rlnAngleRot"] == -102.30296
    assert first["rlnImageName"] == "000001@relion31.mrcs"
    # optics columns on every row
    assert (table["rlnImagePixelSize"] == 2.806).all()
    assert (table["rlnSphericalAberration"] == 0.01).all()
    assert (table["rlnImageSize"] == 256).all()
    assert table.attrs["cryolab_optics_columns"][0] == "rlnOpticsGroup"


def test_six_optics_groups_split_and_merge(shared_data, tmp_path):
    path = shared_data / "relion" / "relion31.6opticsgroups.star"
    raw = _raw(path)
    table = read_star(path)
    assert len(table) == len(raw["particles"]) == 139
    optics = raw["optics"].set_index("rlnOpticsGroup")
    for _, row in table.sample(20, random_state=0).iterrows():
        group = optics.loc[row["rlnOpticsGroup"]]
        for column in ("rlnImagePixelSize", "rlnVoltage", "rlnSphericalAberration", "rlnOpticsGroupName", "rlnOddZernike"):
            assert row[column] == group[column]
    out = write_star(tmp_path / "six.star", table)
    written = _raw(out)
    pd.testing.assert_frame_equal(written["optics"], raw["optics"])
    pd.testing.assert_frame_equal(written["particles"], raw["particles"][written["particles"].columns])
    assert list(written["particles"].columns) == list(raw["particles"].columns)
    pd.testing.assert_frame_equal(read_star(out), table)


def test_written_file_is_relion31(shared_data, tmp_path):
    out = write_star(tmp_path / "p.star", read_star(shared_data / "relion" / "relion31.star"))
    text = out.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0] == "# version 30001"
    assert text.index("data_optics") < text.index("data_particles")
    assert text.count("# version 30001") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.star"]  # atomic: no temporary left


def test_unknown_columns_survive_round_trip(shared_data, tmp_path):
    table = read_star(shared_data / "relion" / "toy_projections.star", pixel_size_A=1.0)
    assert "dummyVariable" in table.columns
    table["myScore"] = np.linspace(0, 1, len(table)) / 3  # full double precision
    table["myLabel"] = ["with space" if i % 2 else "" for i in range(len(table))]
    table.attrs["cryolab_optics_columns"] = ["myOpticsThing"]
    table["myOpticsThing"] = 4.5
    out = write_star(tmp_path / "toy.star", table)
    raw = _raw(out)
    assert "myOpticsThing" in raw["optics"].columns and "myOpticsThing" not in raw["particles"].columns
    back = read_star(out)
    for column in ("dummyVariable", "myScore", "myLabel", "myOpticsThing", "rlnImageName", "rlnPhaseShift"):
        np.testing.assert_array_equal(back[column].to_numpy(), table[column].to_numpy())


def test_relion30_origin_conversion(shared_data):
    path = shared_data / "relion" / "sample_particles_relion30.star"
    raw = _raw(path)["model_class_1"]
    table = read_star(path)
    assert table.attrs["cryolab_format"] == "relion3.0"
    px = 5.0 * 1e4 / 37369.207031  # rlnDetectorPixelSize (µm) * 1e4 / rlnMagnification
    np.testing.assert_allclose(table["rlnImagePixelSize"], px)
    np.testing.assert_allclose(table["rlnOriginXAngst"], raw["rlnOriginX"] * px)
    np.testing.assert_allclose(table["rlnOriginYAngst"], raw["rlnOriginY"] * px)
    assert "rlnOriginX" not in table.columns and "rlnOriginY" not in table.columns
    assert table["rlnOriginXAngst"].iloc[0] == pytest.approx(0.1996 * px)


def test_relion30_with_image_pixel_size_and_pixel_origins_in_31_file(shared_data):
    t = read_star(shared_data / "relion" / "FinalRefinement-OriginalParticles-PfCRT.star")
    np.testing.assert_allclose(t["rlnImagePixelSize"], 1.035)  # 1.035 µm at 10000x
    assert t["rlnOriginXAngst"].iloc[0] == pytest.approx(-0.14063 * 1.035)
    # optics block but origins in pixels (ASPIRE's RELION projections)
    s = read_star(shared_data / "relion" / "rln_proj_64_shifted.star")
    np.testing.assert_allclose(s["rlnOriginXAngst"], [6.0, 10.0, -8.0, -13.0])
    np.testing.assert_allclose(s["rlnOriginYAngst"], [10.0, -5.0, 11.0, -3.0])


def test_relion5_round_trip(shared_data, tmp_path):
    path = shared_data / "relion" / "relion5.star"
    table = read_star(path)
    assert table.attrs["cryolab_format"] == "relion5"
    assert table["rlnOddZernike"].iloc[0].startswith("[0.068048")
    assert (table["rlnImagePixelSize"] == 0.89).all() and (table["rlnVoltage"] == 100.0).all()
    back = read_star(write_star(tmp_path / "r5.star", table))
    pd.testing.assert_frame_equal(back, table)


def test_relion30_written_as_31_gets_optics_groups(shared_data, tmp_path):
    table = read_star(shared_data / "relion" / "sample_particles_relion30.star")
    out = write_star(tmp_path / "from30.star", table)
    raw = _raw(out)
    # the file mixes 300 kV and 200 kV particles: two optics groups, in order of appearance
    assert list(raw["optics"]["rlnVoltage"]) == [300.0, 200.0]
    assert list(raw["optics"]["rlnOpticsGroup"]) == [1, 2]
    np.testing.assert_allclose(raw["optics"]["rlnImagePixelSize"], table["rlnImagePixelSize"].iloc[0])
    np.testing.assert_array_equal(raw["particles"]["rlnOpticsGroup"], np.where(table["rlnVoltage"] == 300, 1, 2))
    assert {"rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"} <= set(raw["optics"].columns)
    back = read_star(out)
    for column in table.columns:  # every column survives, rlnDetectorPixelSize included
        np.testing.assert_array_equal(back[column].to_numpy(), table[column].to_numpy())


def test_optics_that_vary_within_a_group_are_regrouped(shared_data, tmp_path):
    table = read_star(shared_data / "relion" / "relion31.star")
    table.loc[3:, "rlnVoltage"] = 200.0
    with pytest.warns(UserWarning, match="regrouped into 2 optics groups"):
        out = write_star(tmp_path / "g.star", table)
    back = read_star(out)
    assert list(back["rlnOpticsGroup"]) == [1, 1, 1, 2, 2]
    assert list(back["rlnOpticsGroupName"]) == ["opticsGroup1"] * 3 + ["opticsGroup2"] * 2
    np.testing.assert_array_equal(back["rlnVoltage"], table["rlnVoltage"])


def test_pixel_size_override_and_missing(shared_data):
    path = shared_data / "relion" / "toy_projections.star"
    with pytest.raises(InputError, match="no pixel size.*--pixel-size") as err:
        read_star(path)
    assert str(path) in str(err.value)
    assert (read_star(path, pixel_size_A=2.5)["rlnImagePixelSize"] == 2.5).all()
    with pytest.warns(UserWarning, match="replaces rlnImagePixelSize"):
        t = read_star(shared_data / "relion" / "relion31.star", pixel_size_A=3.0)
    assert (t["rlnImagePixelSize"] == 3.0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_star(shared_data / "relion" / "relion31.star", pixel_size_A=2.806)  # same: no warning


def test_star_errors(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_star(tmp_path / "none.star")
    bad_group = tmp_path / "bad_group.star"
    bad_group.write_text(
        "data_optics\nloop_\n_rlnOpticsGroup\n_rlnImagePixelSize\n1 1.0\n\n"
        "data_particles\nloop_\n_rlnImageName\n_rlnOpticsGroup\n1@a.mrcs 1\n2@a.mrcs 7\n"
    )
    with pytest.raises(InputError, match="optics group.*7.*not defined"):
        read_star(bad_group)
    empty = tmp_path / "empty.star"
    empty.write_text("# nothing here\n")
    with pytest.raises(InputError) as err:
        read_star(empty)
    assert str(empty) in str(err.value)
    table = pd.DataFrame({"rlnImageName": ["1@a.mrcs"]})
    table.attrs["cryolab_source"] = "x.star"
    with pytest.raises(InputError, match="missing column.*rlnAngleRot, rlnAnglePsi needed for poses"):
        require_columns(table, ["rlnAngleRot", "rlnImageName", "rlnAnglePsi"], "poses")


def test_parse_image_names():
    frames, paths = parse_image_names(["000001@a/b.mrcs", "12@c.mrcs", "single.mrc"])
    np.testing.assert_array_equal(frames, [0, 11, 0])
    assert list(paths) == ["a/b.mrcs", "c.mrcs", "single.mrc"]
    for bad in ("x@a.mrcs", "0@a.mrcs", "3@"):
        with pytest.raises(InputError, match="bad rlnImageName"):
            parse_image_names([bad], source="p.star")
