"""facelens model package: architecture, preprocessing, face pipeline, Grad-CAM.

``from model import FaceAnalyzer`` is resolved lazily so that importing light
modules (``model.labels``, ``model.settings``) never pulls in TensorFlow.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FaceAnalyzer", "FaceResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from model import analyzer

        return getattr(analyzer, name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
