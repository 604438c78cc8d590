"""cloudworker's settings, as ``config`` (the name this repository has always given them).

They live in the library, :mod:`cloudworker.settings`; this package stays so that
``from config import Settings`` in scripts and in code written before the move
keeps working in a checkout. It is not part of the wheel.
"""

from cloudworker.settings import PREFIX, Settings, SettingsError, load

__all__ = ["PREFIX", "Settings", "SettingsError", "load"]
