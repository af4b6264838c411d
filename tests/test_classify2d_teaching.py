"""Nelson's EM with unknown shifts (1D, one template) and several classes (2D): cryolab.classify2d.teaching."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from cryolab.classify2d.teaching import (TeachingModel, hypothesis_log_probabilities, integer_shifts, log_likelihood,
                                         shift_signals, simulate_shifted_copies, teaching_e_step, teaching_em,
                                         teaching_m_step)
from cryolab.errors import InputError


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: threads only add synchronisation (costly on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _template_1d(length=64):
    x = torch.arange(length, dtype=torch.float64)
    return 2.0 * torch.exp(-((x - 24) ** 2) / 6) + torch.exp(-((x - 40) ** 2) / 40) - 0.8 * torch.exp(-((x - 31) ** 2) / 3)


def _best_cyclic_offset(estimate, truth):
    """Integer roll of ``estimate`` that best matches ``truth`` (the template's origin is arbitrary)."""
    scores = [float(torch.dot(torch.roll(estimate, d), truth)) for d in range(len(truth))]
    d = int(np.argmax(scores))
    return d if d <= len(truth) // 2 else d - len(truth)


def test_shift_signals_moves_content_towards_larger_indices():
    signal = torch.zeros(8, dtype=torch.float64)
    signal[2] = 1.0
    out = shift_signals(signal, torch.tensor([[3], [-1]]))
    assert int(out[0].argmax()) == 5 and int(out[1].argmax()) == 1
    image = torch.zeros(5, 6, dtype=torch.float64)
    image[1, 2] = 1.0  # row (y) 1, column (x) 2
    moved = shift_signals(image, torch.tensor([[2, 1]]))[0]  # x + 2, y + 1
    assert moved[2, 4] == 1.0 and moved.sum() == 1.0


def test_likelihood_written_out_matches_direct_gaussian_sum():
    g = torch.Generator().manual_seed(1)
    template = _template_1d(16)
    shifts = integer_shifts(2)
    data, _, _ = simulate_shifted_copies(template, 5, shifts, 0.5, generator=g)
    model = TeachingModel(templates=template[None], class_weights=torch.ones(1, dtype=torch.float64),
                          shift_weights=torch.full((5,), 0.2, dtype=torch.float64), sigma=0.5)
    direct = 0.0
    for y in data:
        total = 0.0
        for s in shifts[:, 0].tolist():
            r = y - torch.roll(template, s)
            total += 0.2 * (2 * math.pi * 0.25) ** (-8) * math.exp(-float((r**2).sum()) / (2 * 0.25))
        direct += math.log(total)
    assert log_likelihood(data, model, shifts) == pytest.approx(direct, rel=1e-10)
    resp = teaching_e_step(data, model, shifts)
    assert torch.allclose(resp.sum(dim=(1, 2)), torch.ones(5, dtype=torch.float64))


def test_1d_single_template_recovers_shift_distribution_and_likelihood_increases():
    g = torch.Generator().manual_seed(0)
    template = _template_1d()
    shifts = integer_shifts(8)
    true_w = torch.exp(-(shifts[:, 0].double() ** 2) / (2 * 3.0**2))
    true_w = true_w / true_w.sum()
    data, _, true_index = simulate_shifted_copies(template, 600, shifts, 0.6, shift_weights=true_w, generator=g)
    result = teaching_em(data, 1, shifts, n_iterations=40, generator=g)

    lls = np.array(result.log_likelihoods)
    assert np.all(np.diff(lls) >= -1e-8 * np.abs(lls[1:]))  # EM never decreases the likelihood
    assert lls[-1] > lls[0] + 1000
    assert result.model.sigma == pytest.approx(0.6, rel=0.05)

    # the template is found up to a global cyclic offset d; the shift prior then moves by -d
    d = _best_cyclic_offset(result.model.templates[0], template)
    assert abs(d) <= 3
    corr = torch.corrcoef(torch.stack([torch.roll(result.model.templates[0], d), template]))[0, 1]
    assert corr > 0.98
    recovered = torch.zeros_like(true_w)
    for j, s in enumerate(shifts[:, 0].tolist()):
        target = s - d
        if -8 <= target <= 8:
            recovered[target + 8] += result.model.shift_weights[j]
    total_variation = 0.5 * float((recovered - true_w).abs().sum())
    assert total_variation < 0.12
    # each signal's most probable shift, corrected by d, is its true shift for most signals
    best = result.responsibilities[:, 0].argmax(dim=1)
    assert float(((shifts[best, 0] - d) == shifts[true_index, 0]).double().mean()) > 0.7  # chance: 1/17


def test_2d_several_classes_with_unknown_shifts():
    g = torch.Generator().manual_seed(3)
    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")

    def blob(cx, cy, sx, sy):
        return torch.exp(-((x - cx) ** 2) / (2 * sx**2) - ((y - cy) ** 2) / (2 * sy**2))

    templates = torch.stack([blob(8, 8, 4, 1.5), blob(8, 8, 1.5, 4), blob(6, 6, 2, 2) + blob(10, 10, 2, 2)]).double() * 1.5
    shifts = integer_shifts(2, ndim=2)
    data, classes, _ = simulate_shifted_copies(templates, 180, shifts, 0.5, generator=g)
    # EM climbs to the nearest local maximum: keep the best of three spread-out random starts
    result = teaching_em(data, 3, shifts, n_iterations=20, n_starts=3, generator=torch.Generator().manual_seed(0))
    lls = np.array(result.log_likelihoods)
    assert np.all(np.diff(lls) >= -1e-8 * np.abs(lls[1:]))
    found = result.responsibilities.sum(-1).argmax(dim=1)
    assert adjusted_rand_score(classes.numpy(), found.numpy()) > 0.95
    assert result.model.class_weights.sum() == pytest.approx(1.0)


def test_m_step_is_the_maximiser_of_the_expected_complete_log_likelihood():
    """Perturbing the M-step's parameters lowers Q(θ) = Σ r log[π w p(y|k,s)]."""
    g = torch.Generator().manual_seed(5)
    shifts = integer_shifts(3)
    data, _, _ = simulate_shifted_copies(torch.stack([_template_1d(32), -_template_1d(32)]), 80, shifts, 0.7, generator=g)
    start = TeachingModel(templates=data[:2].clone(), class_weights=torch.tensor([0.5, 0.5], dtype=torch.float64),
                          shift_weights=torch.full((7,), 1 / 7, dtype=torch.float64), sigma=1.0)
    r = teaching_e_step(data, start, shifts)
    best = teaching_m_step(data, r, shifts)

    def q(model):
        return float((r * hypothesis_log_probabilities(data, model, shifts)).sum())

    for variant in (
        TeachingModel(best.templates * 1.05, best.class_weights, best.shift_weights, best.sigma),
        TeachingModel(best.templates, best.class_weights, best.shift_weights, best.sigma * 1.1),
        TeachingModel(best.templates, best.class_weights + torch.tensor([0.05, -0.05], dtype=torch.float64), best.shift_weights, best.sigma),
    ):
        assert q(variant) < q(best)


@pytest.mark.parametrize("data, k, problem", [
    (torch.zeros(2, 16, dtype=torch.float64), 3, "cannot fill"),
    (torch.full((4, 16), float("nan"), dtype=torch.float64), 1, "NaN"),
    (torch.zeros(4, 4, 4, 4), 1, "must be"),
])
def test_teaching_bad_inputs_raise_one_line_errors(data, k, problem):
    with pytest.raises(InputError, match=problem) as info:
        teaching_em(data, k, integer_shifts(1), n_iterations=1)
    assert "\n" not in str(info.value)
