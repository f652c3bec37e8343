"""paramiko, imported without paying for ``invoke`` up front.

paramiko 5 imports ``invoke`` when ``paramiko.config`` loads, only to run ``Match exec`` lines of
an ssh_config. Importing ``invoke`` pulls in ``unittest.mock`` and ``asyncio``: about 50 ms of every
``gk ssh`` start-up (a quarter of it), spent even when no config has a ``Match exec``. Here a
placeholder module is registered first: paramiko's ``import invoke`` gets it at once, and the real
import happens on the first attribute paramiko asks for, i.e. only when a ``Match exec`` is
evaluated. (``importlib.util.LazyLoader`` cannot do this on Python 3.11: the ``import`` statement
itself reads ``__spec__``, which makes it load.) Behaviour is unchanged; when ``invoke`` is not
installed nothing is registered and paramiko's own fallback applies as before.

Import paramiko in gatekeeper.client as ``from gatekeeper.client._paramiko import paramiko``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


class _Deferred(types.ModuleType):
    """Stands in for a module until one of its attributes is used; then imports the real module
    (which replaces this one in ``sys.modules``) and forwards every attribute to it."""

    def __getattr__(self, attr: str) -> Any:
        real = self.__dict__.get("_deferred_real")
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
            self.__dict__["_deferred_real"] = real
        return getattr(real, attr)


def _defer(name: str) -> None:
    """Register a placeholder for ``name`` unless it is imported already or not installed."""
    if name in sys.modules or importlib.util.find_spec(name) is None:
        return
    sys.modules[name] = _Deferred(name)


_defer("invoke")

import paramiko  # noqa: E402  (after the placeholder, on purpose)

__all__ = ["paramiko"]
