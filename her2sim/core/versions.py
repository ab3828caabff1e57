"""Installed versions of her2sim and of the libraries whose numbers shape its results."""
from __future__ import annotations

from importlib import metadata

#: libraries recorded beside every study summary and listed in reports
VERSION_PACKAGES = ("numpy", "numba", "scipy", "h5py", "pydicom", "xraydb", "scikit-learn", "matplotlib")


def package_versions(packages=VERSION_PACKAGES, keep_missing: bool = True) -> dict:
    """``{"her2sim": version, package: version}`` from :mod:`importlib.metadata`.

    A package that is not installed maps to ``None`` (``keep_missing=True``) or is left out.
    """
    from her2sim import __version__

    out = {"her2sim": __version__}
    for name in packages:
        if name == "her2sim":
            continue
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if keep_missing:
                out[name] = None
    return out


__all__ = ["VERSION_PACKAGES", "package_versions"]
