"""Errors shared by several modules, below all of them: this module imports nothing of
the package (and no JAX), so any module can import it without an import cycle."""
from __future__ import annotations


class WeightsError(ValueError):
    """A weights file that cannot be used; the message names the file and the fix."""
