"""The hub's services: bus, router, delivery workers, digest, API and CLI."""
