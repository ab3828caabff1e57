"""Peer timing for ``mc_throughput.py``: goupil's forward photon transport in infinite water.

goupil (V. Niess et al., "Goupil: A Monte Carlo engine for the backward transport of
low-energy gamma-rays", arXiv:2412.02414; https://github.com/niess/goupil, PyPI ``goupil``)
is a Rust/C gamma-ray transport engine with a Python interface. Its
``SimpleGeometry("H2O", 1.0)`` is an unbounded uniform water medium, the exact analogue of
her2sim's "effectively infinite" 1 m water cube. A forward ``TransportEngine`` transports
an array of photon states in one call (single-threaded).

Settings chosen to match her2sim's transport (:mod:`her2sim.sim._transport_kernels`):

* ``compton_model = "Klein-Nishina"`` (her2sim samples free-electron Klein-Nishina),
* ``absorption = "Continuous"`` (weighting, like her2sim's implicit capture),
* Rayleigh scattering on (default),
* ``energy_min`` = her2sim's energy cut-off (lowest window edge - 4 sigma), so both codes
  follow a photon until it falls below the same energy.

goupil's own default physics (Penelope scattering-function Compton model, discrete
absorption) is timed too, as an extra.
"""
from __future__ import annotations

import time

import numpy as np


def available() -> bool:
    """True when the ``goupil`` module can be imported."""
    try:
        import goupil  # noqa: F401
    except ImportError:
        return False
    return True


def _engine(energy_min_kev: float, compton_model: str, absorption: str, seed: int):
    import goupil

    engine = goupil.TransportEngine(goupil.SimpleGeometry("H2O", 1.0))
    engine.compton_model = compton_model
    engine.absorption = absorption
    engine.energy_min = energy_min_kev * 1e-3  # MeV
    engine.random.seed = seed
    engine.compile()
    return engine


def _point_source_states(engine, n: int, energy_kev: float):
    """``n`` photons of ``energy_kev`` emitted isotropically from the origin (goupil states, cm, MeV)."""
    import goupil

    states = goupil.states(n)
    states["energy"] = energy_kev * 1e-3
    states["weight"] = 1.0
    cos_t = 2.0 * engine.random.uniform01(n) - 1.0
    sin_t = np.sqrt(1.0 - cos_t ** 2)
    phi = 2.0 * np.pi * engine.random.uniform01(n)
    states["direction"][:, 0] = np.cos(phi) * sin_t
    states["direction"][:, 1] = np.sin(phi) * sin_t
    states["direction"][:, 2] = cos_t
    return states


def time_transport(n_photons: int, energy_kev: float, energy_min_kev: float, repeats: int = 3, seed: int = 1,
                   compton_model: str = "Klein-Nishina", absorption: str = "Continuous") -> dict:
    """Best-of-``repeats`` forward-transport rate of goupil for a point source in infinite water.

    Parameters
    ----------
    n_photons : int
        Photons per timed call.
    energy_kev : float
        Emission energy (keV).
    energy_min_kev : float
        Energy below which a photon is stopped (keV).
    repeats : int
        Timed calls (each on fresh states); the fastest is reported (machine shared).
    seed : int
        goupil random-stream seed.

    Returns
    -------
    dict
        ``photons_per_s`` (transport call only), ``photons_per_s_with_source`` (state
        generation with numpy + transport), ``cpu_per_wall`` (process CPU s / wall s of the
        transport call; ~1 means one thread), ``all_photons_per_s``.
    """
    engine = _engine(energy_min_kev, compton_model, absorption, seed)
    warm = _point_source_states(engine, 1000, energy_kev)
    engine.transport(warm)
    rates, rates_src, cpu_ratio = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        states = _point_source_states(engine, n_photons, energy_kev)
        t1 = time.perf_counter()
        c1 = time.process_time()
        status = engine.transport(states)
        t2 = time.perf_counter()
        c2 = time.process_time()
        if status.size != n_photons:
            raise RuntimeError(f"goupil returned {status.size} statuses for {n_photons} photons")
        rates.append(n_photons / (t2 - t1))
        rates_src.append(n_photons / (t2 - t0))
        cpu_ratio.append((c2 - c1) / (t2 - t1))
    best = int(np.argmax(rates))
    return {"photons_per_s": rates[best], "photons_per_s_with_source": max(rates_src),
            "cpu_per_wall": cpu_ratio[best], "all_photons_per_s": rates, "compton_model": compton_model,
            "absorption": absorption, "energy_min_kev": energy_min_kev}


def interactions_per_photon(n_photons: int, energy_kev: float, energy_min_kev: float, seed: int = 2,
                            compton_model: str = "Klein-Nishina", absorption: str = "Continuous") -> float:
    """Mean number of Compton + Rayleigh collisions per photon before it falls below ``energy_min_kev``.

    From goupil's recorded vertices: every vertex except the ``Start`` one is a collision
    (the final ``Energy Min`` vertex is the collision that took the photon below the cut).
    """
    engine = _engine(energy_min_kev, compton_model, absorption, seed)
    states = _point_source_states(engine, n_photons, energy_kev)
    out = engine.transport(states, vertices=True)
    kinds = out.vertices["kind"]
    return float(np.count_nonzero(kinds != b"Start") / n_photons)


def goupil_version() -> str:
    import goupil

    return str(goupil.VERSION)
