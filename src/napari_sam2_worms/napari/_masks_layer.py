"""The masks layer: the session's label stack on screen, and the layers set up with it.

A mixin of :class:`~napari_sam2_worms.napari._widget.TrackerWidget` (it uses the
widget's ``viewer``, ``session``, ``current_frame``, ``masks_changed``, the painting
mixin's ``_on_paint`` and the prompts mixin's ``_ensure_prompts_layer``). The masks layer
is a copy of ``session.labels``: the session's frames are copied in after each change
(only the frames that changed; napari draws the frame on screen).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _layers, _style
from ._prompt_sync import MASKS


class MasksLayer:
    """The masks-layer half of the tracker widget."""

    def _ensure_layers(self: Any) -> None:
        s = self.session
        assert s is not None
        labels = self._layer(MASKS)
        if labels is None or labels.data.shape != s.labels.shape:
            if labels is not None:
                self.viewer.layers.remove(labels)
            labels = self.viewer.add_labels(np.array(s.labels), name=MASKS, opacity=0.5)
        else:
            labels.data[:] = s.labels
        labels.colormap = _layers.labels_colormap(s.objects)
        labels.refresh()
        # (re)connect: layers may come from an earlier widget on this viewer
        labels.events.paint.disconnect(self._on_paint)
        labels.events.paint.connect(self._on_paint)
        _style.add_display_layers(self.viewer)  # (it replaces an older version's layers)
        self._ensure_prompts_layer()

    def refresh_labels(self: Any, frames: Any = None, skeletons: bool = True) -> None:
        """Copy session labels into the masks layer (all frames, or the given ones).

        The masks changed, so the skeletons are recomputed (unless ``skeletons`` is False).
        """
        labels = self._layer(MASKS)
        if labels is None or self.session is None:
            return
        if labels.data.shape != self.session.labels.shape:
            self._ensure_layers()
        elif frames is None:
            labels.data[:] = self.session.labels
            labels.refresh()
        else:
            frames = list(frames)
            for f in frames:
                labels.data[f] = self.session.labels[f]
            if self.current_frame() in frames:  # other frames are drawn when shown
                labels.refresh()
        if skeletons:
            self.masks_changed()
