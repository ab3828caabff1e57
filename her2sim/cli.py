"""``her2sim`` command-line front door.

Each subcommand prints a short human summary and, with ``--json``, the same
figures as one JSON object whose keys are stable (they are quoted in notes and
benchmarks).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from her2sim.core.errors import Her2simError
from her2sim.core.hdf5io import to_json


def _print_json(obj) -> None:
    print(json.dumps(json.loads(to_json(obj)), indent=2))


# ---------------------------------------------------------------------- materials
def cmd_materials(args) -> int:
    from her2sim.core.materials import MATERIAL_NAMES, MATERIALS
    from her2sim.sim.xsections import mass_attenuation_cm2_g

    e = args.energy_kev
    out = {"energy_kev": e, "materials": {}}
    for name in MATERIAL_NAMES:
        rho = MATERIALS[name].density_g_cm3
        mr = mass_attenuation_cm2_g(name, e)
        out["materials"][name] = {"density_g_cm3": rho, "mu_rho_cm2_g": mr, "mu_per_cm": mr * rho,
                                  "source": MATERIALS[name].source}
    if args.json:
        _print_json(out)
    else:
        print(f"Narrow-beam attenuation at {e:g} keV (xraydb Elam tables)")
        print(f"{'material':<16}{'rho g/cm3':>10}{'mu/rho cm2/g':>14}{'mu 1/cm':>10}")
        for n, m in out["materials"].items():
            print(f"{n:<16}{m['density_g_cm3']:>10.4g}{m['mu_rho_cm2_g']:>14.5f}{m['mu_per_cm']:>10.4f}")
    return 0


# ---------------------------------------------------------------------- camera
def _camera_from_args(args):
    from her2sim.sim.camera import Camera

    return Camera.from_toml(args.config) if getattr(args, "config", None) else Camera()


def cmd_camera(args) -> int:
    cam = _camera_from_args(args)
    rep = cam.report()
    if args.json:
        _print_json(rep)
        return 0
    c, d = rep["collimator"], rep["detector"]
    print("her2sim camera report (analytic, SIMIND-like)")
    print(f"  collimator        {c['name']}: hex holes {c['hole_mm']} mm, septa {c['septa_mm']} mm, "
          f"length {c['length_mm']} mm ({c['material']}, mu {c['mu_septa_per_cm']:.2f} 1/cm)")
    print(f"  effective length  {c['effective_length_mm']:.2f} mm")
    print(f"  detector          NaI {d['crystal_mm']} mm, {d['width_mm']:g} x {d['height_mm']:g} mm, "
          f"intrinsic {d['intrinsic_fwhm_mm']} mm, energy resolution {100 * d['energy_resolution']:.1f} %")
    print(f"  image-plane gap   {d['image_plane_gap_mm']:.2f} mm (air {d['air_gap_mm']} + cover {d['cover_mm']} + "
          f"mean depth {d['mean_interaction_depth_mm']:.2f})")
    for w in rep["windows"]:
        print(f"  window            {w['name']:<10} {w['lower_kev']:.2f}-{w['upper_kev']:.2f} keV")
    print(f"  geometric efficiency   {rep['geometric_efficiency']:.4e}")
    print(f"  sensitivity            {rep['sensitivity_cps_per_mbq']:.1f} cps/MBq per head "
          f"({rep['sensitivity_per_photon']:.3e} per photon)")
    print(f"  septal transmission    {100 * rep['septal_penetration_fraction']:.3f} % through {rep['min_septal_path_mm']:.2f} mm")
    print("  distance mm   geometric FWHM mm   system FWHM mm")
    for k in rep["system_fwhm_mm"]:
        print(f"  {k:>11} {rep['geometric_fwhm_mm'][k]:>19.2f} {rep['system_fwhm_mm'][k]:>16.2f}")
    return 0


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="her2sim", description="In-silico 99mTc HER2 SPECT/CT studies")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("materials", help="attenuation table of the material catalogue")
    s.add_argument("--energy-kev", type=float, default=140.5)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_materials)

    s = sub.add_parser("camera", help="analytic NM670/LEHR camera report")
    s.add_argument("--config", type=Path, help="TOML file overriding camera fields")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_camera)

    from her2sim import commands  # subcommands that need the heavier stages
    commands.register(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Her2simError as exc:
        print(f"her2sim: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
