"""The transformers integration (mta.models.hf) seen from outside: whether it can be imported and registering it
with transformers' Auto classes, both without importing transformers."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.metadata
import importlib.util
import re
import sys
import warnings


def transformers_supported() -> bool:
    """Whether a transformers release that mta.models.hf supports (5.x) is installed."""
    try:
        version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return False
    return re.match(r"5\.", version) is not None


def register_with_transformers() -> None:
    """Have MTAConfig and MTAForCausalLM registered with AutoConfig and AutoModelForCausalLM (importing
    mta.models.hf registers them) as soon as transformers 5.x is imported: now if it already is, else right after
    its package runs, before any of its Auto classes can be reached. Without transformers 5.x, nothing happens."""
    if not transformers_supported():
        return
    if "transformers" in sys.modules:
        importlib.import_module("mta.models.hf")
    elif not any(isinstance(finder, _RegisterAfterTransformers) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterTransformers())


class _RegisterAfterTransformers(importlib.abc.MetaPathFinder):
    """Finds `transformers` through the other finders on sys.meta_path and returns their spec with a loader that
    imports mta.models.hf after running the package. It stays there: transformers is imported once, and a lookup
    that does not import it (importlib.util.find_spec) must not spend it."""

    def find_spec(self, name, path, target=None):
        if name != "transformers":
            return None
        for finder in sys.meta_path:
            spec = None if finder is self or not hasattr(finder, "find_spec") else finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ThenRegister(spec.loader)
                return spec
        return None


class _ThenRegister(importlib.abc.Loader):
    """A package loader that runs the package, then imports mta.models.hf (which registers the Auto classes)."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        try:
            importlib.import_module("mta.models.hf")
        except Exception as error:  # never break the user's `import transformers` over mta's registration
            warnings.warn(f"mta could not register its models with transformers' Auto classes: {error!r}",
                          RuntimeWarning, stacklevel=2)

    def __getattr__(self, name):  # the wrapped loader's other methods (get_resource_reader, is_package, ...)
        return getattr(self.loader, name)
