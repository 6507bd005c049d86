"""Batched SAM 2 propagation: all objects of a frame in one forward pass.

sam2 1.1.0's ``SAM2VideoPredictor.propagate_in_video`` runs memory attention, the mask
decoder and the memory encoder once per object per frame (batch size 1). The legacy
predictor ran them once per frame for all objects. This module does the latter while
keeping sam2's per-object state (``output_dict_per_obj``), so per-object prompts,
objects added late, corrections and the backend's memory trimming work unchanged.

Exactness: objects are only batched together when their memory bank reads the same
frames, i.e. they have the same conditioning frames and the same non-conditioning
outputs within the memory window on the side being read. Then the batched forward is
the per-object forward stacked (every layer is independent along the batch), and the
results match up to floating-point summation order. Objects with a different memory
(e.g. an object added on a later frame) form their own group; a group of one runs
sam2's own ``_run_single_frame_inference``.

Only imported when the SAM 2 backend is used (imports torch).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from typing import Any

import torch

from .inference_state import mark_tracked, store_output


class MergedOutputs(Mapping):
    """Read-only ``{frame: output}`` view stacking several objects' outputs on demand.

    Only the fields sam2's memory bank reads (``maskmem_features``,
    ``maskmem_pos_enc``, ``obj_ptr``) are stacked, once per frame (``cache``).
    """

    def __init__(self, stores: list[dict], keys: list[int], cache: dict | None = None) -> None:
        self._stores = stores
        self._keys = keys
        self._keyset = set(keys)
        self._cache = {} if cache is None else cache

    def __getitem__(self, t: int) -> dict:
        """Return the (merged) output of frame ``t``."""
        if t not in self._keyset:
            raise KeyError(t)
        out = self._cache.get(t)
        if out is None:
            out = merge_outputs([s[t] for s in self._stores])
            self._cache[t] = out
        return out

    def __iter__(self) -> Iterator[int]:
        """Iterate over the frames."""
        return iter(self._keys)

    def __len__(self) -> int:
        """Count the frames."""
        return len(self._keys)


def merge_outputs(outs: list[dict]) -> dict:
    """Stack per-object outputs (batch 1 each) along the batch dimension."""
    n = len(outs)
    merged: dict[str, Any] = {
        "maskmem_features": torch.cat([o["maskmem_features"] for o in outs]),
        "obj_ptr": torch.cat([o["obj_ptr"] for o in outs]),
    }
    pos = outs[0]["maskmem_pos_enc"]
    # sam2 caches maskmem_pos_enc as one constant shared by all frames and objects
    merged["maskmem_pos_enc"] = (
        None if pos is None else [x[:1].expand(n, *x.shape[1:]) for x in pos]
    )
    return merged


def memory_signature(out_dict: dict, frame: int, window: int, reverse: bool) -> tuple:
    """Sum up what the memory bank of one object reads on ``frame``.

    Objects with equal signatures can be batched exactly.
    """
    cond = tuple(sorted(out_dict["cond_frame_outputs"]))
    if reverse:
        near = (t for t in out_dict["non_cond_frame_outputs"] if frame < t <= frame + window)
    else:
        near = (t for t in out_dict["non_cond_frame_outputs"] if frame - window <= t < frame)
    return cond, tuple(sorted(near))


def group_objects(
    state: dict, obj_idxs: list[int], frame: int, window: int, reverse: bool
) -> list[list[int]]:
    """Split ``obj_idxs`` into groups with the same memory signature (order kept)."""
    groups: dict[tuple, list[int]] = {}
    for idx in obj_idxs:
        sig = memory_signature(state["output_dict_per_obj"][idx], frame, window, reverse)
        groups.setdefault(sig, []).append(idx)
    return list(groups.values())


def run_group(
    predictor: Any,
    state: dict,
    group: list[int],
    frame: int,
    reverse: bool,
    window: int,
    cond_cache: dict,
) -> list[tuple[dict, torch.Tensor]]:
    """Track the objects ``group`` (obj_idx) on non-conditioning ``frame`` in one pass.

    Returns, per object, sam2's compact output (what ``_run_single_frame_inference``
    stores) and its low-resolution mask logits on the compute device. ``cond_cache``
    keeps stacked conditioning outputs across frames (they do not change while
    propagating); key it by nothing else than one propagation call.
    """
    dicts = [state["output_dict_per_obj"][i] for i in group]
    if len(group) == 1:
        out, masks = predictor._run_single_frame_inference(
            inference_state=state,
            output_dict=dicts[0],
            frame_idx=frame,
            batch_size=1,
            is_init_cond_frame=False,
            point_inputs=None,
            mask_inputs=None,
            reverse=reverse,
            run_mem_encoder=True,
        )
        return [(out, masks)]
    cond_keys = sorted(dicts[0]["cond_frame_outputs"])
    _, near = memory_signature(dicts[0], frame, window, reverse)
    merged = {
        "cond_frame_outputs": MergedOutputs(
            [d["cond_frame_outputs"] for d in dicts],
            cond_keys,
            cond_cache.setdefault(tuple(group), {}),
        ),
        "non_cond_frame_outputs": MergedOutputs(
            [d["non_cond_frame_outputs"] for d in dicts], list(near)
        ),
    }
    batch = len(group)
    _, _, feats, pos, sizes = predictor._get_image_feature(state, frame, batch)
    cur = predictor.track_step(
        frame_idx=frame,
        is_init_cond_frame=False,
        current_vision_feats=feats,
        current_vision_pos_embeds=pos,
        feat_sizes=sizes,
        point_inputs=None,
        mask_inputs=None,
        output_dict=merged,
        num_frames=state["num_frames"],
        track_in_reverse=reverse,
        run_mem_encoder=True,
        prev_sam_mask_logits=None,
    )
    # as sam2's _run_single_frame_inference, for the whole batch at once
    storage = state["storage_device"]
    mem = cur["maskmem_features"]
    if mem is not None:
        mem = mem.to(torch.bfloat16).to(storage, non_blocking=True)
    masks_gpu = cur["pred_masks"]
    if predictor.fill_hole_area > 0:
        from sam2.utils.misc import fill_holes_in_mask_scores

        masks_gpu = fill_holes_in_mask_scores(masks_gpu, predictor.fill_hole_area)
    masks = masks_gpu.to(storage, non_blocking=True)
    pos_enc = predictor._get_maskmem_pos_enc(state, cur)
    one_pos = None if pos_enc is None else [x[:1] for x in pos_enc]
    results = []
    for k in range(batch):
        sl = slice(k, k + 1)
        out = {
            "maskmem_features": None if mem is None else mem[sl],
            "maskmem_pos_enc": one_pos,
            "pred_masks": masks[sl],
            "obj_ptr": cur["obj_ptr"][sl],
            "object_score_logits": cur["object_score_logits"][sl],
        }
        results.append((out, masks_gpu[sl]))
    return results


def can_batch(predictor: Any) -> bool:
    """Tell whether objects can be batched (False: the model couples them).

    Batching objects the model couples would change the results.
    """
    return not getattr(predictor, "non_overlap_masks_for_mem_enc", False)


def propagate_batched(
    predictor: Any,
    state: dict,
    start: int,
    count: int,
    reverse: bool,
    window: int,
) -> Generator[tuple[int, list[int], torch.Tensor, list[torch.Tensor]], None, None]:
    """``propagate_in_video`` with objects batched per frame.

    Yields ``(frame, obj_ids, video_res_logits, score_logits)`` exactly as sam2's
    generator (plus each object's object-score logits, in ``obj_ids`` order). Must run
    under ``torch.inference_mode()`` (and autocast on CUDA), like sam2's.
    """
    predictor.propagate_in_video_preflight(state)
    obj_ids = state["obj_ids"]
    n_obj = len(obj_ids)
    n_frames = state["num_frames"]
    if reverse:
        end = max(start - count, 0)
        order = range(start, end - 1, -1) if start > 0 else range(0)
    else:
        end = min(start + count, n_frames - 1)
        order = range(start, end + 1)
    cond_cache: dict = {}
    device = state["device"]
    for frame in order:
        masks: list[Any] = [None] * n_obj
        scores: list[Any] = [None] * n_obj
        todo = []
        for idx in range(n_obj):
            out = state["output_dict_per_obj"][idx]["cond_frame_outputs"].get(frame)
            if out is not None:
                masks[idx] = out["pred_masks"].to(device, non_blocking=True)
                scores[idx] = out["object_score_logits"]
            else:
                todo.append(idx)
        for group in group_objects(state, todo, frame, window, reverse):
            for idx, (out, m) in zip(
                group, run_group(predictor, state, group, frame, reverse, window, cond_cache)
            ):
                store_output(state, idx, frame, out)
                masks[idx] = m
                scores[idx] = out["object_score_logits"]
        for idx in range(n_obj):
            mark_tracked(state, idx, frame, reverse)
        all_masks = torch.cat(masks) if n_obj > 1 else masks[0]
        _, video_res = predictor._get_orig_video_res_output(state, all_masks)
        yield frame, list(obj_ids), video_res, scores
