"""cryolab.masks: spherical and threshold masks (agreement with relion_mask_create), checks; `cryolab mask`."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from cryolab.errors import InputError
from cryolab.masks import check_mask, soft_edge_from_distance, spherical_mask, threshold_mask

REFERENCE = Path(__file__).parent / "data" / "validate_relion_reference.npz"


def test_spherical_mask_radius_and_soft_edge_values():
    n, pixel = 64, 2.0
    radius, edge = 30.0, 8.0
    mask = spherical_mask(n, pixel, radius, soft_edge_A=edge)
    assert mask.shape == (n, n, n) and mask.dtype == torch.float32
    c = n // 2
    along_x = mask[c, c, c:]  # distance from the centre = 2 Å per voxel
    distance = torch.arange(len(along_x)) * pixel
    assert torch.all(along_x[distance <= radius] == 1)
    assert torch.all(along_x[distance >= radius + edge] == 0)
    assert float(along_x[17]) == pytest.approx(0.5 + 0.5 * math.cos(math.pi * (34 - 30) / 8))  # 34 Å: halfway -> 0.5
    assert float(along_x[17]) == pytest.approx(0.5, abs=1e-6)
    assert torch.all(along_x[1:] <= along_x[:-1])  # never rises outwards
    # the same mask along z and y: spherical
    assert torch.equal(mask[c:, c, c], along_x) and torch.equal(mask[c, c:, c], along_x)


def test_hard_spherical_mask_volume_and_offset_centre():
    n, pixel, radius = 48, 1.0, 15.0
    hard = spherical_mask(n, pixel, radius)
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    assert float(hard.sum()) == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.02)
    shifted = spherical_mask(n, pixel, 5.0, center_A=(10.0, 0.0, -4.0))  # (x, y, z) in Å
    z, y, x = np.unravel_index(int(torch.argmax(ndimage_com_weights(shifted))), shifted.shape)
    assert (x - n // 2, y - n // 2, z - n // 2) == (10, 0, -4)
    disc = spherical_mask(32, 1.0, 8.0, ndim=2)
    assert disc.shape == (32, 32) and float(disc.sum()) == pytest.approx(math.pi * 64, rel=0.05)
    with pytest.raises(InputError):
        spherical_mask(32, 1.0, -3.0)
    with pytest.raises(InputError):
        spherical_mask(32, 0.0, 3.0)


def ndimage_com_weights(mask):
    """A map peaking at the mask's centre of mass voxel."""
    com = ndimage.center_of_mass(mask.numpy())
    out = torch.zeros_like(mask)
    out[tuple(int(round(c)) for c in com)] = 1
    return out.flatten()


def test_threshold_mask_agrees_with_relion_mask_create():
    data = np.load(REFERENCE)
    provenance = json.loads(str(data["provenance"]))["threshold_mask"]
    halves = data["half_maps"].astype(np.float32)
    average = 0.5 * (halves[0] + halves[1])
    pixel = float(data["pixel_size_A"])
    ours = threshold_mask(average, pixel, provenance["ini_threshold"], extend_A=provenance["extend_inimask_px"] * pixel,
                          soft_edge_A=provenance["width_soft_edge_px"] * pixel, lowpass_A=provenance["lowpass_A"])
    theirs = data["threshold_mask"].astype(np.float32)  # stored as float16
    assert np.abs(ours.numpy() - theirs).max() < 1e-3
    assert 0.02 < float(ours.mean()) < 0.2  # a real, nontrivial mask


def test_threshold_mask_contains_the_region_and_falls_off_monotonically():
    n, pixel = 40, 1.5
    volume = torch.zeros(n, n, n)
    volume[15:25, 18:22, 10:30] = 1.0  # a bar
    extend, edge = 3.0, 6.0
    mask = threshold_mask(volume, pixel, 0.5, extend_A=extend, soft_edge_A=edge)
    region = (volume >= 0.5).numpy()
    assert torch.all(mask[torch.from_numpy(region)] == 1)  # contains the thresholded region
    assert float(mask.min()) >= 0 and float(mask.max()) <= 1
    distance = ndimage.distance_transform_edt(~region, sampling=pixel)
    m = mask.numpy()
    assert np.all(m[distance < extend - 1e-6] == 1)  # grown by extend_A
    assert np.all(m[distance >= extend + edge + pixel * math.sqrt(3)] == 0)  # zero beyond the edge
    # monotonic: sort voxels by distance; the mask never increases outward (up to the grid's
    # discreteness between the two distance transforms)
    order = np.argsort(distance.ravel(), kind="stable")
    values = m.ravel()[order]
    d = distance.ravel()[order]
    for lo, hi in [(extend, extend + 2), (extend + 2, extend + 4), (extend + 4, extend + 8)]:
        inner, outer = values[(d >= lo - 1) & (d < lo)], values[(d >= hi) & (d < hi + 1)]
        assert inner.mean() > outer.mean()
    soft = m[(m > 0) & (m < 1)]
    assert len(soft) > 100  # there is a soft edge
    hard = threshold_mask(volume, pixel, 0.5)
    assert torch.equal(hard, torch.from_numpy(region.astype(np.float32)))


def test_negative_extension_erodes_and_empty_masks_are_input_errors():
    volume = torch.zeros(32, 32, 32)
    volume[8:24, 8:24, 8:24] = 1.0
    eroded = threshold_mask(volume, 1.0, 0.5, extend_A=-3.0)
    # RELION's rule: drop voxels closer than 3 to an outside voxel (centre to centre), i.e. the
    # two outer layers of the 16³ cube (at distances 1 and 2)
    assert float(eroded.sum()) == pytest.approx(12**3)
    grown = threshold_mask(volume, 1.0, 0.5, extend_A=3.0)
    assert torch.all(grown[6:26, 16, 16] == 1) and grown[5, 16, 16] == 0  # two layers added along each axis
    with pytest.raises(InputError, match="threshold"):
        threshold_mask(volume, 1.0, 2.0)
    with pytest.raises(InputError, match="empty"):
        threshold_mask(volume, 1.0, 0.5, extend_A=-20.0)


def test_soft_edge_profile():
    d = torch.tensor([-1.0, 0.0, 2.0, 4.0, 8.0, 9.0])
    v = soft_edge_from_distance(d, 8.0)
    assert v.tolist() == pytest.approx([1.0, 1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5, 0.0, 0.0])
    assert soft_edge_from_distance(d, 0.0).tolist() == [1, 1, 0, 0, 0, 0]


def test_check_mask_rejects_mismatches():
    mask = spherical_mask(32, 1.5, 10.0)
    assert torch.equal(check_mask(mask, (32, 32, 32), pixel_size_A=1.5, mask_pixel_size_A=1.5), mask)
    with pytest.raises(InputError, match="pixel size"):
        check_mask(mask, (32, 32, 32), pixel_size_A=1.5, mask_pixel_size_A=2.0, path="m.mrc")
    with pytest.raises(InputError, match="shape"):
        check_mask(mask, (30, 30, 30))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        check_mask(2 * mask, (32, 32, 32))
    check_mask(mask, (32, 32, 32), pixel_size_A=1.5, mask_pixel_size_A=None)  # unknown: not compared


# --- cryolab mask --------------------------------------------------------------------------


@pytest.fixture
def map_file(tmp_path):
    from cryolab.io import write_mrc

    volume = np.zeros((32, 32, 32), np.float32)
    volume[10:22, 12:20, 8:24] = 1.0
    path = tmp_path / "map.mrc"
    write_mrc(path, volume, 1.5)
    return path


def test_cli_mask_threshold_and_sphere(map_file, tmp_path):
    from cryolab.cli import main
    from cryolab.io import read_mrc

    out = tmp_path / "thr"
    assert main(["mask", str(map_file), "--threshold", "0.5", "--extend-A", "3", "--soft-edge-A", "4.5", "-o", str(out)]) == 0
    written = read_mrc(out / "mask.mrc")
    assert written.pixel_size_A == pytest.approx(1.5) and written.data.shape == (32, 32, 32)
    expected = threshold_mask(read_mrc(map_file).data, 1.5, 0.5, extend_A=3, soft_edge_A=4.5)
    assert np.allclose(written.data, expected.numpy())
    assert (out / "mask.png").exists() and (out / "run.json").exists()

    out = tmp_path / "sphere"
    assert main(["mask", str(map_file), "--sphere-radius-A", "12", "--soft-edge-A", "6", "-o", str(out)]) == 0
    assert np.allclose(read_mrc(out / "mask.mrc").data, spherical_mask(32, 1.5, 12.0, soft_edge_A=6.0).numpy())


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--threshold", "5"], "threshold"),
        (["--sphere-radius-A", "10", "--extend-A", "2"], "--extend-A"),
        (["--threshold", "0.5", "--soft-edge-A", "-1"], "soft-edge"),
    ],
)
def test_cli_mask_bad_input_is_one_line_exit_2_and_no_output(map_file, tmp_path, capsys, extra, message):
    from cryolab.cli import main

    out = tmp_path / "out"
    assert main(["mask", str(map_file), *extra, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cryolab mask: error: ") and message in err
    assert not out.exists()
