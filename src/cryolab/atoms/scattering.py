"""Electron scattering factors of neutral atoms: Peng et al. (1996) five-Gaussian fits.

.. math::

    f_e(s) = \\sum_{i=1}^{5} a_i \\exp(-b_i s^2), \\qquad s = \\sin\\theta / \\lambda = q / 2,

with ``a_i`` in Å and ``b_i`` in Å² (fit range 0 ≤ s ≤ 2 Å⁻¹). The coefficients are read
from gemmi's built-in copy of International Tables for Crystallography Vol. C, Table 4.3.2.2
(``gemmi.Element(el).c4322``), which is the Peng et al. table. They cover neutral atoms H to Cf;
ionic charges are ignored (an ion is given its neutral atom's factor).

The Coulomb potential of an atom with isotropic B-factor B follows by Fourier transform (the
first Born approximation; Kirkland 2010, ch. 5):

.. math::

    V(r) = \\frac{h^2}{2\\pi m_0 e} \\sum_i a_i \\left(\\frac{4\\pi}{b_i + B}\\right)^{3/2}
           \\exp\\left(-\\frac{4\\pi^2 r^2}{b_i + B}\\right),

i.e. a sum of normalised 3D Gaussians with variances ``σ_i² = (b_i + B) / (8π²)`` and weights
``POTENTIAL_PER_SCATTERING_V_A2 · a_i`` (in V·Å³), where ``h²/(2π m_0 e) = 47.878 V·Å²``
(non-relativistic rest mass; the relativistic correction belongs to the interaction constant).

References
----------
L.-M. Peng, G. Ren, S. L. Dudarev, M. J. Whelan (1996). Robust parameterization of elastic and
absorptive electron atomic scattering factors. Acta Cryst. A52, 257-276.
International Tables for Crystallography Vol. C (2006), Table 4.3.2.2.
E. J. Kirkland (2010). Advanced Computing in Electron Microscopy, 2nd ed., Springer, ch. 5.
"""

from __future__ import annotations

import math
from functools import lru_cache

import gemmi
import numpy as np

from cryolab.errors import InputError

__all__ = ["peng_coefficients", "atomic_masses", "POTENTIAL_PER_SCATTERING_V_A2"]

_H = 6.62607015e-34  # J s
_M0 = 9.1093837015e-31  # kg
_E = 1.602176634e-19  # C

#: h² / (2π m0 e) in V·Å²: converts a scattering amplitude f_e (Å) into a potential integral.
POTENTIAL_PER_SCATTERING_V_A2 = _H**2 / (2 * math.pi * _M0 * _E) * 1e20  # = 47.8777...


@lru_cache(maxsize=None)
def _element(symbol: str) -> gemmi.Element:
    el = gemmi.Element(symbol)
    if el.atomic_number == 0:
        raise InputError(f"unknown element {symbol!r}: no electron scattering factor")
    return el


def peng_coefficients(elements) -> tuple[np.ndarray, np.ndarray]:
    """Peng et al. (1996) five-Gaussian electron scattering coefficients.

    Parameters
    ----------
    elements : sequence of str, length n
        Element symbols (case-insensitive; ``"D"`` is treated as hydrogen).

    Returns
    -------
    a : (n, 5) float64, Å
    b : (n, 5) float64, Å²
        ``f_e(s) = Σ_i a_i exp(-b_i s²)`` with ``s = sinθ/λ`` in 1/Å; ``f_e(0) = Σ_i a_i``.
    """
    symbols = np.asarray(elements, dtype=str).reshape(-1)
    unique, inverse = np.unique(symbols, return_inverse=True)
    table = np.empty((len(unique), 10))
    for k, sym in enumerate(unique):
        el = _element("H" if sym.upper() == "D" else sym)
        table[k] = el.c4322.get_coefs()
    rows = table[inverse]
    return rows[:, :5].copy(), rows[:, 5:].copy()


def atomic_masses(elements) -> np.ndarray:
    """Standard atomic weights (Da) of the given elements, shape (n,) float64."""
    symbols = np.asarray(elements, dtype=str).reshape(-1)
    unique, inverse = np.unique(symbols, return_inverse=True)
    masses = np.array([_element("H" if s.upper() == "D" else s).weight for s in unique])
    return masses[inverse]
