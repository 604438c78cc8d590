"""cloudworker on AWS: a CloudFormation stack and ``python -m deploy aws``.

The stack (``cloudworker.yaml``) holds everything a deployment needs: the
queues and the bucket (as :mod:`deploy.provision` makes them locally), a
least-privilege instance role, a launch template whose user data installs the
project, an Auto Scaling group of workers and a Flower instance. The command
(:mod:`deploy.aws.cli`) creates or updates it, waits, prints its outputs, writes
the laptop's environment file and deletes it all again. See README.md here.
"""
