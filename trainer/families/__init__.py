"""Model families behind one interface: `get_family(name)` returns a `ModelFamily`.

Importing this package is torch-free (names, specs and defaults only); `get_family` imports the
implementation, and with it torch and diffusers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from intake.family_specs import FAMILY_NAMES, FamilyDefaults, FamilySpec, family_spec

if TYPE_CHECKING:
    from trainer.families.base import ModelFamily

__all__ = ["FAMILY_NAMES", "FamilyDefaults", "FamilySpec", "family_spec", "get_family"]

_IMPLEMENTATIONS = {"sd15": "SD15Family", "sdxl": "SDXLFamily", "flux": "FluxFamily"}


def get_family(name: str) -> ModelFamily:
    """The family object for `name` (one of FAMILY_NAMES); raises KeyError for unknown names."""
    spec = family_spec(name)
    module = importlib.import_module(f"trainer.families.{spec.base}")
    return getattr(module, _IMPLEMENTATIONS[spec.base])(spec)
