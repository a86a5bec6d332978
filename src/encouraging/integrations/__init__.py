"""Integrations with training frameworks; a layer above :mod:`encouraging.losses` (depends on it only).

Each submodule imports its framework on import (``encouraging.integrations.transformers`` needs
``transformers``); importing :mod:`encouraging` imports none of them.
"""
