"""Regenerate ``ctf_relion_reference.npz``: RELION 3.1.3's CTF on the image grid.

Run from anywhere with RELION 3.1.3 on the PATH (``relion_project``, ``relion_ctf_toolbox``)::

    .venv/bin/python tests/data/make_ctf_reference.py

The tests never run RELION; they read the stored arrays. See ``ctf_relion_reference.md`` for what
the arrays mean and which frequencies each one covers.

Three RELION code paths are sampled, each for a 64 box (1.5 Å/px) and a 65 box (1.1 Å/px):

``project``
    ``relion_project --ctf`` (the projector + ``CTF::getFftwImage``). The map is a single voxel of
    value 1 at ``(N//2, N//2, N//2)``; its projection's transform is 1 inside the projector's
    radius and 0 outside. The CTF is the ratio ``rfft2(proj_ctf) / rfft2(proj)`` where
    ``|rfft2(proj)| > 0.5`` (inside the Nyquist disc) and NaN elsewhere.
``premultiply``
    ``relion_ctf_toolbox --i particles.star`` (``CTF::getFftwImage`` applied to an image). The
    images hold a single pixel of value 1 at ``(N//2, N//2)``, whose transform has modulus 1 at
    every frequency, so the ratio covers the whole rfft grid, corners and Nyquist included.
    This path applies rlnCtfScalefactor but not rlnCtfBfactor (relion_project applies both).
``simulate``
    ``relion_ctf_toolbox --simulate`` (``CTF::getCenteredImage``): the CTF written directly as a
    centred full ``(N, N)`` image. No B-factor or scale option exists on this path, and its
    numeric options are parsed as float32 (see ``simulate_pixel_size_*``).
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mrcfile
import numpy as np

OUT = Path(__file__).resolve().parent / "ctf_relion_reference.npz"

# Columns stored per particle, in this order (RELION STAR names; optics columns merged on).
COLUMNS = [
    "rlnDefocusU",
    "rlnDefocusV",
    "rlnDefocusAngle",
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
    "rlnPhaseShift",
    "rlnCtfBfactor",
    "rlnCtfScalefactor",
]

# Optics groups: (voltage kV, Cs mm, Q0).
OPTICS = {1: (300.0, 2.7, 0.1), 2: (200.0, 2.0, 0.07), 3: (300.0, 0.01, 0.0)}

# Particles: (optics group, defocus U, V, angle, phase shift, B-factor, scale).
PARTICLES = [
    (1, 15000.0, 12000.0, 30.0, 0.0, 0.0, 1.0),
    (1, 21000.0, 18500.0, 123.4, 0.0, 150.0, 0.8),
    (2, 8000.0, 7000.0, -60.0, 45.0, 0.0, 1.0),
    (3, 5000.0, 5000.0, 0.0, 90.0, 50.0, 1.0),
]

BOXES = {64: 1.5, 65: 1.1}  # box size -> pixel size in Å

# relion_ctf_toolbox --simulate inputs per box: kV, Cs, Q0, defU, defV, defAng, phase shift.
SIMULATE = {
    64: (300.0, 2.7, 0.1, 15000.0, 12000.0, 30.0, 0.0),
    65: (200.0, 2.0, 0.07, 15000.0, 12000.0, -35.0, 20.0),
}


def _star_text(box: int, pixel_size: float, image_stack: str | None) -> str:
    lines = ["# version 30001", "", "data_optics", "", "loop_"]
    optics_cols = [
        "rlnOpticsGroup", "rlnOpticsGroupName", "rlnVoltage", "rlnSphericalAberration",
        "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize", "rlnImageDimensionality",
    ]
    lines += [f"_{c} #{i + 1}" for i, c in enumerate(optics_cols)]
    for g, (kv, cs, q0) in OPTICS.items():
        lines.append(f"{g} opticsGroup{g} {kv} {cs} {q0} {pixel_size} {box} 2")
    lines += ["", "", "# version 30001", "", "data_particles", "", "loop_"]
    cols = [
        "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst",
        "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnPhaseShift", "rlnCtfBfactor",
        "rlnCtfScalefactor", "rlnOpticsGroup",
    ]
    if image_stack is not None:
        cols.append("rlnImageName")
    lines += [f"_{c} #{i + 1}" for i, c in enumerate(cols)]
    for n, (g, du, dv, ang, ps, b, s) in enumerate(PARTICLES, start=1):
        row = f"0 0 0 0 0 {du} {dv} {ang} {ps} {b} {s} {g}"
        if image_stack is not None:
            row += f" {n:06d}@{image_stack}"
        lines.append(row)
    return "\n".join(lines) + "\n"


def _param_table() -> np.ndarray:
    rows = []
    for g, du, dv, ang, ps, b, s in PARTICLES:
        kv, cs, q0 = OPTICS[g]
        rows.append([du, dv, ang, kv, cs, q0, ps, b, s])
    return np.array(rows, dtype=np.float64)


def _run(cmd: list[str], cwd: Path, log: list[str]) -> None:
    log.append(" ".join(cmd))
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _write_mrc(path: Path, data: np.ndarray, pixel_size: float) -> None:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data.astype(np.float32))
        m.voxel_size = pixel_size


def _read(path: Path) -> np.ndarray:
    with mrcfile.open(path, permissive=True) as m:
        return np.asarray(m.data, dtype=np.float64)


def main() -> None:
    for exe in ("relion_project", "relion_ctf_toolbox"):
        if shutil.which(exe) is None:
            sys.exit(f"{exe} not found on PATH")
    version = subprocess.run(
        ["relion_project", "--version"], capture_output=True, text=True
    ).stdout.strip().replace("\n", "; ")
    arrays: dict[str, np.ndarray] = {"columns": np.array(COLUMNS), "params": _param_table()}
    log: list[str] = []
    stars: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for box, apix in BOXES.items():
            c = box // 2
            n_part = len(PARTICLES)

            # --- relion_project, with and without --ctf ---
            vol = np.zeros((box, box, box), np.float32)
            vol[c, c, c] = 1.0
            _write_mrc(tmp / f"vol{box}.mrc", vol, apix)
            star = _star_text(box, apix, None)
            (tmp / f"angles{box}.star").write_text(star)
            stars[f"project_{box}"] = star
            for tag, extra in (("ctf", ["--ctf"]), ("noctf", [])):
                _run(["relion_project", "--i", f"vol{box}.mrc", "--o", f"proj{box}_{tag}",
                      "--ang", f"angles{box}.star", *extra], tmp, log)
            f_ctf = np.fft.rfft2(_read(tmp / f"proj{box}_ctf.mrcs"))
            f_ref = np.fft.rfft2(_read(tmp / f"proj{box}_noctf.mrcs"))
            ok = np.abs(f_ref) > 0.5
            ratio = np.where(ok, f_ctf / np.where(ok, f_ref, 1.0), np.nan)
            assert np.nanmax(np.abs(ratio.imag)) < 1e-6, "relion_project ratio not real"
            arrays[f"project_{box}"] = ratio.real.astype(np.float32)

            # --- relion_ctf_toolbox pre-multiplication of delta images ---
            deltas = np.zeros((n_part, box, box), np.float32)
            deltas[:, c, c] = 1.0
            _write_mrc(tmp / f"delta{box}.mrcs", deltas, apix)
            star = _star_text(box, apix, f"delta{box}.mrcs")
            (tmp / f"delta{box}.star").write_text(star)
            stars[f"premultiply_{box}"] = star
            _run(["relion_ctf_toolbox", "--i", f"delta{box}.star", "--o", "_ctf"], tmp, log)
            f_ctf = np.fft.rfft2(_read(tmp / f"delta{box}__ctf.mrcs"))
            f_ref = np.fft.rfft2(deltas.astype(np.float64))
            ratio = f_ctf / f_ref
            assert np.abs(ratio.imag).max() < 1e-6, "relion_ctf_toolbox ratio not real"
            arrays[f"premultiply_{box}"] = ratio.real.astype(np.float32)

            # --- relion_ctf_toolbox --simulate (centred full image) ---
            kv, cs, q0, du, dv, ang, ps = SIMULATE[box]
            _run(["relion_ctf_toolbox", "--simulate", f"sim{box}.mrc", "--angpix", str(apix),
                  "--box", str(box), "--kV", str(kv), "--Cs", str(cs), "--Q0", str(q0),
                  "--defU", str(du), "--defV", str(dv), "--defAng", str(ang),
                  "--phase_shift", str(ps)], tmp, log)
            arrays[f"simulate_{box}"] = _read(tmp / f"sim{box}.mrc").astype(np.float32)[None]
            arrays[f"simulate_params_{box}"] = np.array(
                [[du, dv, ang, kv, cs, q0, ps, 0.0, 1.0]], dtype=np.float64)
            arrays[f"pixel_size_{box}"] = np.array(apix)
            # --simulate parses its numeric options as single precision (textToFloat -> float):
            # the pixel size it really used is float32(apix), whereas STAR values are read in
            # double. Store what it used.
            arrays[f"simulate_pixel_size_{box}"] = np.array(float(np.float32(apix)))

    provenance = {
        "generator": "tests/data/make_ctf_reference.py",
        "relion": version,
        "relion_package": "Debian relion 3.1.3-3+b1 (CPU build)",
        "date": datetime.date.today().isoformat(),
        "commands": log,
        "star_files": stars,
    }
    arrays["provenance"] = np.array(json.dumps(provenance, indent=1))
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
