"""Bridges that let code written for another coordination API run on moot.

Each bridge uses moot's public API only (``moot.connect()`` and the
coordinator's recipes), so it gets every guarantee moot states and nothing
else; ``tests/test_architecture.py`` checks that.
"""
