"""Tracking backends: ``sam2`` (SAM 2 video predictor) and ``classic`` (threshold tracker).

Import the concrete backends from their modules; this package stays light.
"""

from .base import Backend, BackendError, BadPromptError, FrameResult, ObjectPrompts

__all__ = ["Backend", "BackendError", "BadPromptError", "FrameResult", "ObjectPrompts"]
