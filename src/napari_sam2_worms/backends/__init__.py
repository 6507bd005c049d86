"""Tracking backends: ``sam2`` (SAM 2 video predictor) and ``classic`` (threshold tracker).

Build a backend with :func:`.factory.build_backend` (the one place that chooses between
them and falls back from SAM 2 to classic); this package stays light.
"""

from .base import Backend, BackendError, BadPromptError, FrameResult, ObjectPrompts

__all__ = ["Backend", "BackendError", "BadPromptError", "FrameResult", "ObjectPrompts"]
