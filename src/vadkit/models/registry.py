"""The method registry: ``create_model(name, **params)``, as in timm.

Each method is one line of :data:`_MODULES` (name -> the module defining its class, imported on demand;
:func:`model_class` finds the class whose ``name`` matches). ``create_model`` checks the name and the
parameter names up front, so a typo fails with the list of valid choices instead of deep inside a run.
"""

from __future__ import annotations

import difflib
import importlib

from vadkit.errors import ParameterError, VadkitError

# name -> module defining it; modules are imported on demand so that listing methods stays cheap
_MODULES = {
    "patchcore": "vadkit.models.patchcore",
    "padim": "vadkit.models.padim",
    "patchcore_lite": "vadkit.models.patchcore_lite",
    "stfpm": "vadkit.models.stfpm",
    "paste": "vadkit.models.paste",
    "rd4ad": "vadkit.models.rd4ad",
    "draem": "vadkit.models.draem",
    "cfa": "vadkit.models.cfa",
    "efficientad": "vadkit.models.efficientad",
    "fastflow": "vadkit.models.fastflow",
    "adapts": "vadkit.models.adapts",
    "anomalydino": "vadkit.models.anomalydino",
    "dinomaly": "vadkit.models.dinomaly",
    "musc": "vadkit.models.musc",
    "tiny_dinomaly": "vadkit.models.tiny_dinomaly",
    "tiled": "vadkit.models.tiled",
    "sadsem": "vadkit.models.sadsem",
}


def list_models() -> list[str]:
    return sorted(_MODULES)


def model_class(name: str):
    """The class registered under ``name`` (KeyError if unknown)."""
    module = importlib.import_module(_MODULES[name])
    for value in vars(module).values():
        if isinstance(value, type) and getattr(value, "name", None) == name and value.__module__ == module.__name__:
            return value
    raise KeyError(name)


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def create_model(name: str, **params):
    """Build an unfitted model. Unknown names or parameters raise VadkitError listing the valid ones."""
    if name not in _MODULES:
        raise VadkitError(f"unknown model '{name}'.{_suggest(name, list_models())} "
                          f"Available: {', '.join(list_models())}")
    cls = model_class(name)
    valid = cls.param_names()
    unknown = [key for key in params if key not in valid]
    if unknown:
        raise VadkitError(f"unknown parameter(s) for {name}: {', '.join(unknown)}."
                          f"{_suggest(unknown[0], valid)} Valid parameters: {', '.join(valid)}")
    try:
        return cls(**params)
    except VadkitError:
        raise
    except (TypeError, ValueError) as error:  # a value of the wrong type deep in a constructor
        raise ParameterError(f"invalid parameter value for {name}: {error}") from None
