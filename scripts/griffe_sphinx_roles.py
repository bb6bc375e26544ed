"""A griffe extension for the API reference (mkdocs.yml loads it through
mkdocstrings): moot's docstrings cross-reference with Sphinx roles
(:class:`moot.Group`, :meth:`acquire`), which Markdown would print as is.
Each role becomes the inline code of its target, so the reference reads as
the source does."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`~?([^`]+)`")


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
