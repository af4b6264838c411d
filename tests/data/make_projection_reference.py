"""Regenerate ``projection_relion_reference.npz``: RELION 3.1.3 projections with shifts and CTF.

Run with RELION 3.1.3 on the PATH (``relion_project``) and the shared data folder beside the
checkout (``../shared/data``)::

    .venv/bin/python tests/data/make_projection_reference.py

The tests never run RELION; they read the stored arrays and project the same maps (read from
``../shared/data/maps``, whose SHA-256 is stored) with ``cryolab.projection.project_fourier``.

Two sets, an even and an odd box, each of 10 particles at random orientations (uniform on SO(3)),
random sub-pixel origins (``rlnOriginXAngst/YAngst``, up to 4 pixels) and random astigmatic CTFs
with a B-factor::

    relion_project --i MAP.mrc --o proj_KEY --ang KEY.star --ctf --angpix PIXEL

Stored per set ``KEY`` (``1ake_64``, ``ribosome_65``):

``images_KEY``
    float32 ``(10, N, N)``: RELION's output, unchanged. NB: for an odd box RELION 3.1.3 puts the
    projection of the map's centre voxel ``N//2`` at pixel ``N//2 + 1`` (its ``CenterFFT(img,
    false)`` after the inverse FFT moves index 0 to ``(N+1)//2``); cryolab's convention keeps it
    at ``N//2``. The test rolls RELION's odd images by -1 pixel in x and y before comparing.
``angles_deg_KEY``, ``origins_A_KEY``
    ``(10, 3)`` rot, tilt, psi and ``(10, 2)`` rlnOriginXAngst, rlnOriginYAngst.
``ctf_KEY``
    ``(10, 9)`` CTF parameters in the column order of ``ctf_columns`` (RELION STAR names, optics
    columns merged on).
``pixel_size_KEY``, ``map_KEY``, ``map_sha256_KEY``
    Pixel size given to RELION (Å), the map's file name under ``shared/data/maps`` and its hash.
``provenance``
    JSON: RELION version, date, commands and the STAR files that were used.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mrcfile
import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "projection_relion_reference.npz"
MAPS = HERE.parents[2] / "shared" / "data" / "maps"

CTF_COLUMNS = [
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
VOLTAGE_KV, CS_MM, Q0 = 300.0, 2.7, 0.1

# key -> (map file, pixel size in Å (1ake: the header's; the ribosome map has none), defocus range in Å)
SETS = {
    "1ake_64": ("1ake_prody.mrc", 2.0, (6000.0, 11000.0)),
    "ribosome_65": ("clean70SRibosome_vol_65p.mrc", 4.0, (10000.0, 20000.0)),
}
N_PARTICLES = 10
SEED = 20240611


def _particles(
    rng: np.random.Generator, pixel_size: float, defocus_range: tuple[float, float]
) -> dict[str, np.ndarray]:
    n = N_PARTICLES
    angles = np.stack(
        [rng.uniform(-180, 180, n), np.degrees(np.arccos(rng.uniform(-1, 1, n))), rng.uniform(-180, 180, n)],
        axis=1,
    )
    origins = rng.uniform(-4, 4, (n, 2)) * pixel_size
    du = rng.uniform(*defocus_range, n)
    dv = du - rng.uniform(0, 1500, n)
    ctf = np.stack(
        [
            du,
            dv,
            rng.uniform(-180, 180, n),
            np.full(n, VOLTAGE_KV),
            np.full(n, CS_MM),
            np.full(n, Q0),
            np.zeros(n),
            rng.uniform(0, 100, n),
            np.ones(n),
        ],
        axis=1,
    )
    return {"angles_deg": angles, "origins_A": origins, "ctf": ctf}


def _star_text(particles: dict[str, np.ndarray], box: int, pixel_size: float) -> str:
    lines = ["# version 30001", "", "data_optics", "", "loop_"]
    optics = ["rlnOpticsGroup", "rlnOpticsGroupName", "rlnVoltage", "rlnSphericalAberration",
              "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize", "rlnImageDimensionality"]
    lines += [f"_{c} #{i + 1}" for i, c in enumerate(optics)]
    lines.append(f"1 opticsGroup1 {VOLTAGE_KV} {CS_MM} {Q0} {pixel_size} {box} 2")
    lines += ["", "", "# version 30001", "", "data_particles", "", "loop_"]
    cols = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst",
            "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnPhaseShift", "rlnCtfBfactor",
            "rlnCtfScalefactor", "rlnOpticsGroup"]
    lines += [f"_{c} #{i + 1}" for i, c in enumerate(cols)]
    ctf = particles["ctf"]
    for a, o, c in zip(particles["angles_deg"], particles["origins_A"], ctf):
        values = [*a, *o, c[0], c[1], c[2], c[6], c[7], c[8]]
        lines.append(" ".join(f"{v:.6f}" for v in values) + " 1")
    return "\n".join(lines) + "\n"


def main() -> None:
    if shutil.which("relion_project") is None:
        sys.exit("relion_project not found on PATH")
    version = subprocess.run(["relion_project", "--version"], capture_output=True, text=True).stdout
    version = version.strip().replace("\n", "; ")
    rng = np.random.default_rng(SEED)
    arrays: dict[str, np.ndarray] = {"ctf_columns": np.array(CTF_COLUMNS)}
    commands, stars = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for key, (map_name, pixel_size, defocus_range) in SETS.items():
            path = MAPS / map_name
            with mrcfile.open(path, permissive=True) as m:
                volume = np.asarray(m.data, dtype=np.float32)
            box = volume.shape[-1]
            with mrcfile.new(tmp / f"{key}.mrc", overwrite=True) as m:  # origin 0, our pixel size
                m.set_data(volume)
                m.voxel_size = pixel_size
            particles = _particles(rng, pixel_size, defocus_range)
            star = _star_text(particles, box, pixel_size)
            (tmp / f"{key}.star").write_text(star)
            stars[key] = star
            cmd = ["relion_project", "--i", f"{key}.mrc", "--o", f"proj_{key}", "--ang", f"{key}.star",
                   "--ctf", "--angpix", str(pixel_size)]
            commands.append(" ".join(cmd))
            subprocess.run(cmd, cwd=tmp, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            with mrcfile.open(tmp / f"proj_{key}.mrcs", permissive=True) as m:
                images = np.asarray(m.data, dtype=np.float32)
            arrays[f"images_{key}"] = images
            for name, value in particles.items():
                arrays[f"{name}_{key}"] = value
            arrays[f"pixel_size_{key}"] = np.array(pixel_size)
            arrays[f"map_{key}"] = np.array(map_name)
            arrays[f"map_sha256_{key}"] = np.array(hashlib.sha256(path.read_bytes()).hexdigest())
    provenance = {
        "generator": "tests/data/make_projection_reference.py",
        "relion": version,
        "relion_package": "Debian relion 3.1.3-3+b1 (CPU build)",
        "date": datetime.date.today().isoformat(),
        "seed": SEED,
        "commands": commands,
        "star_files": stars,
        "maps": "../shared/data/maps (see its PROVENANCE.md)",
    }
    arrays["provenance"] = np.array(json.dumps(provenance, indent=1))
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
