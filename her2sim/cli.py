"""``her2sim`` command-line front door.

Each subcommand prints a short human summary and, with ``--json``, the same
figures as one JSON object whose keys are stable (they are quoted in notes and
benchmarks).

Errors reach the user as one line on stderr, never as a traceback (unless
``--debug`` is given, anywhere on the command line, or ``HER2SIM_DEBUG=1`` is set):

* a bad argument, a bad input (:class:`~her2sim.core.errors.Her2simError`) or an
  operating-system error (a path that exists / is a folder / is not writable, an
  unreachable Dask scheduler) -> ``her2sim: error: ...`` naming the option, path or
  address, exit code 2;
* anything else -> ``her2sim: internal error: ...``, exit code 1;
* Ctrl-C -> exit code 130.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from her2sim.core.errors import Her2simError
from her2sim.core.jsonio import print_json as _print_json
from her2sim.core.limits import float_range, int_range  # noqa: F401 - argparse types, re-exported


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


# ---------------------------------------------------------------------- argument types
class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``her2sim run: error: argument --workers: ...``), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="her2sim", description="In-silico 99mTc HER2 SPECT/CT studies",
                epilog="--debug (anywhere on the line) shows the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("materials", help="attenuation table of the material catalogue")
    s.add_argument("--energy-kev", type=float_range(1.0, 1000.0), default=140.5)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_materials)

    s = sub.add_parser("camera", help="analytic NM670/LEHR camera report")
    s.add_argument("--config", type=Path, help="TOML file overriding camera fields")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_camera)

    from her2sim import commands  # subcommands that need the heavier stages
    commands.register(sub)
    return p


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, with the notes the stage runner adds (``in her2sim stage ...``)."""
    text = " ".join(str(exc).split())
    notes = [n for n in getattr(exc, "__notes__", []) if n]
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _os_error_text(exc: OSError) -> str:
    """``PATH: reason`` of an operating-system error (both paths of a rename/copy)."""
    reason = exc.strerror or type(exc).__name__
    if exc.filename is not None and exc.filename2 is not None:
        return f"{exc.filename} -> {exc.filename2}: {reason}"
    if exc.filename is not None:
        return f"{exc.filename}: {reason}"
    return _one_line(exc) or reason


def main(argv=None) -> int:
    """Run the ``her2sim`` command line; returns the exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [str(a) for a in argv]
    debug = "--debug" in argv or os.environ.get("HER2SIM_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Her2simError as exc:
        if debug:
            raise
        print(f"her2sim: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if debug:
            raise
        print(f"her2sim: error: {_os_error_text(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        if debug:
            raise
        print("her2sim: error: out of memory; use a smaller grid / matrix or fewer workers", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("her2sim: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence against a traceback
        if debug:
            raise
        print(f"her2sim: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
