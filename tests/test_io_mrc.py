"""MRC reading/writing and the lazy image stack (cryolab.io.mrc)."""

import os
import pickle
import tracemalloc

import mrcfile
import numpy as np
import pytest
import torch

from cryolab.errors import InputError
from cryolab.io import ImageStack, open_stack, read_mrc, write_mrc


def _mrcfile_write(path, data, voxel_size=1.5, stack=False):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        if stack:
            mrc.set_image_stack()
        mrc.voxel_size = voxel_size


@pytest.mark.parametrize(
    "mode, dtype",
    [(0, np.int8), (1, np.int16), (2, np.float32), (6, np.uint16), (12, np.float16)],
)
def test_read_each_mode(tmp_path, mode, dtype):
    rng = np.random.default_rng(mode)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, size=(3, 5, 7), endpoint=True).astype(dtype)
    else:
        data = rng.normal(size=(3, 5, 7)).astype(dtype)
    path = tmp_path / f"mode{mode}.mrc"
    _mrcfile_write(path, data)
    with mrcfile.open(path, header_only=True) as mrc:
        assert int(mrc.header.mode) == mode
    out = read_mrc(path)
    assert out.data.dtype == np.float32
    np.testing.assert_array_equal(out.data, data.astype(np.float32))
    assert out.pixel_size_A == pytest.approx(1.5)
    assert out.origin_A is None
    # the lazy stack converts every mode to float32 too
    stack = open_stack(path)
    np.testing.assert_array_equal(stack[1], data[1].astype(np.float32))
    assert stack[1].dtype == np.float32


def test_write_read_round_trip_volume_with_origin(tmp_path):
    vol = torch.randn(6, 7, 8)  # a torch tensor is accepted
    path = tmp_path / "vol.mrc"
    write_mrc(path, vol, 1.23, origin_A=(1.0, -2.5, 3.0))
    out = read_mrc(path)
    np.testing.assert_array_equal(out.data, vol.numpy())
    assert out.pixel_size_A == pytest.approx(1.23, rel=1e-6)
    assert out.origin_A == pytest.approx((1.0, -2.5, 3.0))
    with mrcfile.open(path, header_only=True) as mrc:
        assert int(mrc.header.mode) == 2
    assert mrcfile.validate(str(path), print_file=open(os.devnull, "w"))


def test_write_stack_and_2d_image(tmp_path):
    stack = np.random.default_rng(0).normal(size=(4, 9, 9)).astype(np.float32)
    write_mrc(tmp_path / "s.mrcs", stack, 2.0)
    with mrcfile.open(tmp_path / "s.mrcs", header_only=True) as mrc:
        assert int(mrc.header.ispg) == 0  # image stack
        assert int(mrc.header.nz) == 4
    out = read_mrc(tmp_path / "s.mrcs")
    np.testing.assert_array_equal(out.data, stack)
    assert out.origin_A is None  # origin 0 unless given
    write_mrc(tmp_path / "img.mrc", stack[0], 2.0)
    assert read_mrc(tmp_path / "img.mrc").data.shape == (9, 9)


def test_write_is_atomic_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.mrc"
    write_mrc(path, np.ones((4, 4, 4)), 1.0)
    write_mrc(path, np.zeros((4, 4, 4)), 1.0)  # overwrite in place
    assert read_mrc(path).data.max() == 0
    with pytest.raises(InputError, match="2D or 3D"):
        write_mrc(path, np.ones((2, 2, 2, 2)), 1.0)
    assert read_mrc(path).data.shape == (4, 4, 4)  # previous file untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mrc"]
    with pytest.raises(InputError, match="pixel size"):
        write_mrc(tmp_path / "b.mrc", np.ones((4, 4)), 0.0)


def test_voxel_size_zero_means_unknown(shared_data):
    out = read_mrc(shared_data / "maps" / "clean70SRibosome_vol_65p.mrc")
    assert out.data.shape == (65, 65, 65)
    assert out.pixel_size_A is None
    stack = open_stack(shared_data / "relion" / "empiar_10076_7.mrc")
    assert stack.pixel_size_A is None and stack.shape == (7, 320, 320)
    assert open_stack(shared_data / "relion" / "empiar_10076_7.mrc", pixel_size_A=1.31).pixel_size_A == 1.31


def test_real_maps_and_old_headers(shared_data):
    prody = read_mrc(shared_data / "maps" / "1ake_prody.mrc")
    assert prody.pixel_size_A == 2.0 and prody.origin_A == (-64.0, -64.0, -64.0)
    # no MAP id string and a zero machine stamp (RELION 2 / cryoDRGN stacks): read permissively
    hand = read_mrc(shared_data / "cryodrgn" / "hand.5.mrcs")
    assert hand.data.shape == (5, 64, 64) and hand.pixel_size_A == 1.0
    raw = np.fromfile(shared_data / "cryodrgn" / "hand.5.mrcs", dtype="<f4", offset=1024).reshape(5, 64, 64)
    np.testing.assert_array_equal(hand.data, raw)
    stack = open_stack(shared_data / "cryodrgn" / "hand.5.mrcs")
    np.testing.assert_array_equal(stack[3], raw[3])


def test_truncated_and_corrupt_files(tmp_path):
    path = tmp_path / "t.mrcs"
    write_mrc(path, np.ones((10, 16, 16)), 1.0)
    with open(path, "r+b") as fh:
        fh.truncate(1024 + 16 * 16 * 4 * 3)
    for reader in (read_mrc, open_stack):
        with pytest.raises(InputError, match="truncated") as err:
            reader(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    junk = tmp_path / "junk.mrc"
    junk.write_bytes(np.random.default_rng(1).integers(0, 255, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError) as err:
        read_mrc(junk)
    assert str(junk) in str(err.value)
    with pytest.raises(InputError, match="file not found"):
        read_mrc(tmp_path / "missing.mrc")


def test_unsupported_mode(tmp_path):
    path = tmp_path / "complex.mrc"
    _mrcfile_write(path, np.ones((4, 4), dtype=np.complex64))
    with pytest.raises(InputError, match="mode 4"):
        read_mrc(path)


def test_image_stack_indexing_over_several_files(tmp_path):
    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 8, 8)).astype(np.float32)
    b = rng.normal(size=(3, 8, 8)).astype(np.float32)
    write_mrc(tmp_path / "a.mrcs", a, 1.5)
    write_mrc(tmp_path / "b.mrcs", b, 1.5)
    stack = open_stack([tmp_path / "a.mrcs", tmp_path / "b.mrcs"])
    both = np.concatenate([a, b])
    assert len(stack) == 8 and stack.shape == (8, 8, 8) and stack.pixel_size_A == 1.5
    np.testing.assert_array_equal(stack[6], both[6])
    np.testing.assert_array_equal(stack[-1], both[-1])
    np.testing.assert_array_equal(stack[2:7:2], both[2:7:2])
    np.testing.assert_array_equal(stack[[7, 0, 5, 5]], both[[7, 0, 5, 5]])
    np.testing.assert_array_equal(stack[torch.tensor([1, 6])], both[[1, 6]])
    mask = np.zeros(8, bool)
    mask[[0, 6]] = True
    np.testing.assert_array_equal(stack[mask], both[mask])
    assert stack[[]].shape == (0, 8, 8)
    with pytest.raises(IndexError):
        stack[8]
    with pytest.raises(IndexError):
        stack[[0, 9]]
    chunks = list(stack.iter_chunks(3))
    assert [len(p) for p, _ in chunks] == [3, 3, 2]
    np.testing.assert_array_equal(np.concatenate([im for _, im in chunks]), both)
    np.testing.assert_array_equal(np.concatenate([p for p, _ in chunks]), np.arange(8))
    np.testing.assert_array_equal(np.stack(list(stack)), both)
    sub = stack.subset([6, 1])
    np.testing.assert_array_equal(sub[:], both[[6, 1]])
    # pickles without its open memory maps (for worker processes)
    clone = pickle.loads(pickle.dumps(stack))
    np.testing.assert_array_equal(clone[7], both[7])
    stack.close()
    np.testing.assert_array_equal(stack[0], both[0])  # reopens on demand


def test_image_stack_from_references_and_errors(tmp_path):
    a = np.arange(4 * 4 * 4, dtype=np.float32).reshape(4, 4, 4)
    write_mrc(tmp_path / "a.mrcs", a, 1.0)
    stack = ImageStack.from_references([tmp_path / "a.mrcs"] * 3, [3, 0, 3])
    np.testing.assert_array_equal(stack[:], a[[3, 0, 3]])
    with pytest.raises(InputError, match="image 5 .*has 4 images"):
        ImageStack.from_references([tmp_path / "a.mrcs"], [4], source=tmp_path / "p.star")
    write_mrc(tmp_path / "other.mrcs", np.zeros((2, 6, 6)), 1.0)
    with pytest.raises(InputError, match="6x6"):
        open_stack([tmp_path / "a.mrcs", tmp_path / "other.mrcs"])
    write_mrc(tmp_path / "finer.mrcs", np.zeros((2, 4, 4)), 0.5)
    with pytest.raises(InputError, match="header pixel size 0.5 Å differs from 1 Å"):
        open_stack([tmp_path / "a.mrcs", tmp_path / "finer.mrcs"])
    assert len(open_stack([tmp_path / "a.mrcs", tmp_path / "finer.mrcs"], pixel_size_A=1.0)) == 6


def test_image_stack_reads_only_what_is_indexed(tmp_path):
    """A ~260 MB stack: the stack memory-maps it and reading two images allocates ~2 images."""
    path = tmp_path / "big.mrcs"
    n, box = 4000, 128
    with mrcfile.new_mmap(path, shape=(n, box, box), mrc_mode=2, overwrite=True) as mrc:
        mrc.set_image_stack()
        mrc.voxel_size = 1.0
        mrc.data[1234] = 7.0
        mrc.data[3999] = -3.0
    assert path.stat().st_size > n * box * box * 4
    tracemalloc.start()
    try:
        stack = open_stack(path)
        images = stack[[1234, 3999]]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert images.shape == (2, box, box)
    assert np.all(images[0] == 7.0) and np.all(images[1] == -3.0)
    assert peak < 8 * box * box * 4, f"peak {peak} bytes: more than a few images were read"
    assert isinstance(stack._mmap(0), mrcfile.mrcmemmap.MrcMemmap)
    stack.close()
