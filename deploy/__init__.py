"""Putting cloudworker somewhere: the provisioning step and the local stack."""
