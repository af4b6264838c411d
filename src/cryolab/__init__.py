"""cryolab: single-particle cryo-EM computation — the forward model and its inverses.

Every function follows the project's conventions (docs/conventions.md): arrays in C order
``(..., z, y, x)``, geometric vectors ``(x, y, z)``, box centre at ``N // 2``, lengths in Å,
angles in degrees, RELION's rotation, shift and CTF conventions.

Library functions accept numpy arrays or torch tensors and return torch tensors.
"""

__version__ = "0.1.0"
