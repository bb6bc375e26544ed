"""Backends: one module per coordination engine, each implementing
:class:`moot.backends.base.Backend` and nothing more."""
