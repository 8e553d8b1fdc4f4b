"""Thin entrypoints: the consume pipeline and the HTTP app."""
