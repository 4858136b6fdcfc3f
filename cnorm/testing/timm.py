"""timm without its torchvision: ``import_timm()`` for the tests and benchmarks of
``cnorm.torch.convert`` on timm's models.

timm imports torchvision, whose PyPI wheels cannot load their compiled operators beside torch
2.13 on these machines. timm's norm layers and models never use torchvision at run time (only
its data pipeline does), so when torchvision does not import, timm is given a stand-in for it:
a module tree that has any attribute (a MagicMock)."""
import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any, Optional
from unittest import mock


class _StandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """torchvision and its submodules as stand-ins that have every attribute."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> Any:
        module = mock.MagicMock(name=spec.name)
        module.__path__, module.__spec__ = [], spec
        return module

    def exec_module(self, module: ModuleType) -> None:
        pass


def import_timm() -> Optional[ModuleType]:
    """timm, or None when it is not installed (or fails to import even so)."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - absent, or its compiled operators do not load
        for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        if not any(isinstance(f, _StandIn) for f in sys.meta_path):
            sys.meta_path.insert(0, _StandIn())
    try:
        return importlib.import_module("timm")
    except ImportError:
        return None
