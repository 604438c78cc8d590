"""The project's own ``config`` package, as a Django project has one (cookiecutter-django)."""
