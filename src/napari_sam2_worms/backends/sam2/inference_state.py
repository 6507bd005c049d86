"""sam2's ``inference_state`` dict: built here, and written only here (outside sam2).

sam2 1.1.0's video predictor keeps a video's prompts, per-object outputs and caches in
one dict that its methods mutate (``add_new_points_or_box``, ``propagate_in_video``,
``reset_state``, ...). The backend builds that dict itself (:func:`new_state`: lazy
frames, no warm-up read) and changes it in a few places of its own: the batched
propagation stores the outputs it computed (:func:`store_output`, :func:`mark_tracked`),
the adapter drops
outputs the memory bank can no longer read (:func:`trim_outputs`), a cleared prompt's
output (:func:`drop_frame_output`) and, on an out-of-memory error, the cached image
features (:func:`drop_cached_features`). :mod:`.adapter` and :mod:`.batched` read it;
:mod:`.compat` lists its keys (``INFERENCE_STATE_KEYS``, ``OUTPUT_KEYS``) and checks them
against the installed sam2.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


def new_state(
    images: Any,
    n_frames: int,
    height: int,
    width: int,
    device: Any,
    storage_device: Any,
    offload_state_to_cpu: bool,
) -> dict[str, Any]:
    """Build sam2 1.1.0's ``init_state`` dict, with lazy images and no warm-up read.

    Parameters
    ----------
    images : the frames, indexable (:class:`~.frames.LazySam2Frames`).
    n_frames, height, width : the video's length and frame size.
    device : where the model computes.
    storage_device : where outputs are kept (the CPU when offloading).
    offload_state_to_cpu : whether outputs are kept on the CPU.

    Returns
    -------
    dict
        The state sam2's predictor methods take as ``inference_state``.
    """
    return {
        "images": images,
        "num_frames": n_frames,
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": offload_state_to_cpu,
        "video_height": height,
        "video_width": width,
        "device": device,
        "storage_device": storage_device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }


def store_output(state: dict, obj_idx: int, frame: int, out: dict) -> None:
    """Store object ``obj_idx``'s compact output on non-conditioning ``frame``.

    As sam2's ``_run_single_frame_inference`` output is stored by its propagation.
    """
    state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"][frame] = out


def mark_tracked(state: dict, obj_idx: int, frame: int, reverse: bool) -> None:
    """Record that object ``obj_idx`` was tracked on ``frame`` (in direction ``reverse``)."""
    state["frames_tracked_per_obj"][obj_idx][frame] = {"reverse": reverse}


def drop_frame_output(state: dict, obj_idx: int, frame: int) -> None:
    """Forget object ``obj_idx``'s tracked (non-conditioning) output on ``frame``."""
    state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"].pop(frame, None)


def trim_outputs(state: dict, frame: int, keep: int) -> None:
    """Delete the non-conditioning outputs farther than ``keep`` frames from ``frame``."""
    for out_dict in state["output_dict_per_obj"].values():
        non_cond = out_dict["non_cond_frame_outputs"]
        for t in [t for t in non_cond if abs(t - frame) > keep]:
            del non_cond[t]


def drop_cached_features(state: dict) -> None:
    """Drop the cached image features (they are recomputed when needed)."""
    state["cached_features"] = {}
