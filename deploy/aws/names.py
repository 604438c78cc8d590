"""Names the template, the deploy command and the instances must agree on.

Kept in one module so that the Python side never restates them; the template
(YAML) cannot import them, so tests compare it with these.
"""

from __future__ import annotations

from pathlib import Path

from cloudworker.settings import Settings

__all__ = [
    "DEFAULTS",
    "FLOWER_PORT",
    "ROLE_TAG",
    "TEMPLATE",
    "password_parameter",
    "release_key",
]

#: The CloudFormation template.
TEMPLATE = Path(__file__).resolve().with_name("cloudworker.yaml")
#: Settings the stack does not make configurable: the defaults of config.Settings.
DEFAULTS = Settings()
#: Flower's port on its instance (the security group opens it to the admin CIDR).
FLOWER_PORT = 5555
#: The instance tag that tells the user data which unit to start (worker or flower).
ROLE_TAG = "CloudworkerRole"


def password_parameter(stack_name: str) -> str:
    """The SSM SecureString holding Flower's password for stack ``stack_name``."""
    return f"/{stack_name}/flower-password"


def release_key(version: str) -> str:
    """The bucket key of the source archive the instances install for ``version``."""
    return f"releases/cloudworker-{version}.tar.gz"
