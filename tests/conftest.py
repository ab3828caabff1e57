"""Tests are grouped by layer (core, sim, recon, phantoms, analysis, study: the front door in her2sim/).

Shared helpers (``mc_phantoms.py``) and data (``data/``, ``malformed_configs/``) stay at this level; this
folder is put on ``sys.path`` so every layer can import the helpers.
"""
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
