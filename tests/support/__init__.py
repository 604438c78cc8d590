"""Code the integration tests load into worker processes."""
