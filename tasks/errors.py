"""The error tree, as ``tasks.errors`` (its home before the library, :mod:`cloudworker.errors`).

Kept for code that imports it by this name, and for results stored before the
move: a failure names its exception's module, and a record naming
``tasks.errors.InvalidInput`` is raised on its caller as the same class.
"""

from cloudworker.errors import *  # noqa: F403
from cloudworker.errors import __all__  # noqa: F401 - re-exported
