"""cryolab.fourier.phase_randomization: amplitudes kept, low shells kept, real, seeded."""

import pytest
import torch

from cryolab.errors import InputError
from cryolab.fourier import randomize_phases_beyond, shell_index


@pytest.mark.parametrize("shape", [(32, 32), (33, 33), (16, 16, 16), (17, 17, 17)])
def test_amplitudes_and_low_shells_are_kept_high_shell_phases_are_random(shape):
    torch.manual_seed(0)
    ndim, limit = len(shape), 5
    x = torch.randn(2, *shape)
    out = randomize_phases_beyond(x, limit, ndim=ndim, generator=7)
    assert out.shape == x.shape and out.dtype == torch.float32  # real
    dims = tuple(range(-ndim, 0))
    before, after = torch.fft.rfftn(x, dim=dims), torch.fft.rfftn(out, dim=dims)
    torch.testing.assert_close(after.abs(), before.abs(), atol=2e-4, rtol=1e-4)
    shells = shell_index(shape)
    low, high = shells <= limit, shells > limit
    torch.testing.assert_close(after[..., low], before[..., low], atol=2e-4, rtol=1e-4)
    # Beyond the limit the randomised data no longer correlate with the input, and the phase
    # differences spread round the circle (uniform: mean cos and mean sin ~ 0). Bounds are five
    # standard deviations of those means for this many independent samples.
    bound = 5 / high.sum().item() ** 0.5
    correlation = (after[..., high] * before[..., high].conj()).real.sum() / (before[..., high].abs() ** 2).sum()
    assert abs(correlation.item()) < bound
    delta = torch.angle(after[..., high] * before[..., high].conj())
    assert abs(torch.cos(delta).mean().item()) < bound and abs(torch.sin(delta).mean().item()) < bound


def test_seeding_is_deterministic_and_batch_members_differ():
    torch.manual_seed(1)
    x = torch.randn(2, 24, 24)
    a = randomize_phases_beyond(x, 3, ndim=2, generator=123)
    b = randomize_phases_beyond(x, 3, ndim=2, generator=torch.Generator().manual_seed(123))
    c = randomize_phases_beyond(x, 3, ndim=2, generator=124)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    same_input = randomize_phases_beyond(x[:1].expand(2, 24, 24), 3, ndim=2, generator=5)
    assert not torch.allclose(same_input[0], same_input[1])  # independent phases per member


def test_resolution_limit_converts_to_the_floor_shell():
    torch.manual_seed(2)
    x = torch.randn(40, 40)
    # 40 px * 1.25 Å = 50 Å box; 7 Å -> shell 7.14 -> shells > 7 randomised (all finer than 7 Å).
    by_resolution = randomize_phases_beyond(x, ndim=2, resolution_A=7.0, pixel_size_A=1.25, generator=9)
    by_shell = randomize_phases_beyond(x, 7, ndim=2, generator=9)
    assert torch.equal(by_resolution, by_shell)
    with pytest.raises(InputError):
        randomize_phases_beyond(x, 7, ndim=2, resolution_A=7.0, pixel_size_A=1.25)
    with pytest.raises(InputError):
        randomize_phases_beyond(x, ndim=2, resolution_A=7.0)
