"""SAM 2's memory bank assembled with its positional part made once, not per frame.

Before memory attention, sam2 1.1.0's ``_prepare_memory_conditioned_features`` gathers
the memory of up to 7 frames and the object pointers, with their positional encodings.
The encodings do not depend on the objects (one constant spatial encoding plus a learnt
vector per memory slot) nor, in steady propagation, on the frame: the same slots are
filled and the object pointers sit at the same distances. sam2 still builds them for
every frame at full batch size: 7 additions and a concatenation of (28,736, objects,
64) float32 (74 MB at 10 objects), which CUDA graphs then copy and every layer's keys
read again.

:func:`prepare_memory` is that method with two changes, everything else as sam2's:

- the positional part is computed for one object, kept (keyed by the slots filled, the
  pointers' distances, the encoding tensors and the autocast state) and broadcast over
  the objects (stride 0: graphs copy one object's worth, the key kernel reads it once);
- under autocast the object pointers (float32 in sam2) are cast to the memory's bfloat16
  before the concatenation, so the memory is bfloat16, as every consumer rounds it
  anyway (keys: ``bf16(memory + pos)``, values: ``bf16(memory)``); only the 64 pointer
  tokens' keys see one extra rounding.

The conditioning frame with prompts (no memory yet) keeps sam2's own code.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

import torch

from .state import FastMemory, require_state

if TYPE_CHECKING:
    from .state import AccelState

log = logging.getLogger(__name__)

#: positional parts kept per predictor (a propagation uses one or two)
POS_CACHE_SIZE = 16


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def _memory_frames(self: Any, frame_idx: int, output_dict: dict, reverse: bool) -> tuple:
    """sam2's choice of memory frames: ([(t_pos, output or None)], unselected cond)."""
    from sam2.modeling.sam2_utils import select_closest_cond_frames

    selected, unselected = select_closest_cond_frames(
        frame_idx, output_dict["cond_frame_outputs"], self.max_cond_frames_in_attn
    )
    slots = [(0, out) for out in selected.values()]
    stride = 1 if self.training else self.memory_temporal_stride_for_eval
    for t_pos in range(1, self.num_maskmem):
        t_rel = self.num_maskmem - t_pos  # how many frames before the current frame
        if t_rel == 1:
            prev = frame_idx + t_rel if reverse else frame_idx - t_rel
        elif not reverse:
            prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
        else:
            prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
        out = output_dict["non_cond_frame_outputs"].get(prev, None)
        if out is None:
            out = unselected.get(prev, None)
        slots.append((t_pos, out))
    return slots, selected, unselected


def _pointers(
    self: Any, frame_idx: int, output_dict: dict, num_frames: int, reverse: bool, sel, unsel
) -> list[tuple[int, torch.Tensor]]:
    """sam2's object pointers: [(temporal distance, obj_ptr)]."""
    sign = -1 if reverse else 1
    max_ptrs = min(num_frames, self.max_obj_ptrs_in_encoder)
    if not self.training and self.only_obj_ptrs_in_the_past_for_eval:
        ptr_cond = {t: o for t, o in sel.items() if (t >= frame_idx if reverse else t <= frame_idx)}
    else:
        ptr_cond = sel
    out = [
        (
            (frame_idx - t) * sign if self.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t),
            o["obj_ptr"],
        )
        for t, o in ptr_cond.items()
    ]
    for t_diff in range(1, max_ptrs):
        t = frame_idx + t_diff if reverse else frame_idx - t_diff
        if t < 0 or (num_frames is not None and t >= num_frames):
            break
        o = output_dict["non_cond_frame_outputs"].get(t, unsel.get(t, None))
        if o is not None:
            out.append((t_diff, o["obj_ptr"]))
    return out


def _positions(
    self: Any,
    encodings: list[tuple[int, torch.Tensor]],
    distances: tuple[int, ...],
    ptr_dtype: torch.dtype,
    num_frames: int,
    device: torch.device,
) -> torch.Tensor:
    """Compute the memory's positional encoding for one object: (tokens, 1, mem_dim).

    As sam2 computes it per object.
    """
    parts = []
    for t_pos, enc in encodings:
        enc = enc[:1].to(device).flatten(2).permute(2, 0, 1)
        parts.append(enc + self.maskmem_tpos_enc[self.num_maskmem - t_pos - 1])
    if distances:
        c = self.hidden_dim
        if self.add_tpos_enc_to_obj_ptrs:
            from sam2.modeling.sam2_utils import get_1d_sine_pe

            t_diff_max = min(num_frames, self.max_obj_ptrs_in_encoder) - 1
            tpos_dim = c if self.proj_tpos_enc_in_obj_ptrs else self.mem_dim
            pos = torch.tensor(distances).to(device=device, non_blocking=True)
            pos = get_1d_sine_pe(pos / t_diff_max, dim=tpos_dim)
            pos = self.obj_ptr_tpos_proj(pos).unsqueeze(1)
        else:
            pos = torch.zeros(len(distances), 1, self.mem_dim, dtype=ptr_dtype, device=device)
        if self.mem_dim < c:
            pos = pos.repeat_interleave(c // self.mem_dim, dim=0)
        parts.append(pos)
    return torch.cat(parts, dim=0)


def prepare_memory(
    self: Any,
    fast: FastMemory,
    frame_idx: int,
    is_init_cond_frame: bool,
    current_vision_feats: list,
    current_vision_pos_embeds: list,
    feat_sizes: list,
    output_dict: dict,
    num_frames: int,
    track_in_reverse: bool = False,
) -> torch.Tensor:
    """Assemble the memory bank and attend to it, as sam2's method (a drop-in).

    ``_prepare_memory_conditioned_features`` of the predictor ``self`` (see the module
    docstring); ``fast`` holds sam2's method and the positional parts.
    """
    args = (
        frame_idx,
        is_init_cond_frame,
        current_vision_feats,
        current_vision_pos_embeds,
        feat_sizes,
        output_dict,
        num_frames,
        track_in_reverse,
    )
    if self.num_maskmem == 0 or is_init_cond_frame:
        return fast.sam2_prepare(*args)
    b = current_vision_feats[-1].size(1)
    c = self.hidden_dim
    h, w = feat_sizes[-1]
    device = current_vision_feats[-1].device
    slots, sel, unsel = _memory_frames(self, frame_idx, output_dict, track_in_reverse)
    prevs = [(t_pos, prev) for t_pos, prev in slots if prev is not None]  # no padding
    encodings = [(t_pos, prev["maskmem_pos_enc"][-1]) for t_pos, prev in prevs]
    if any(e.shape[0] > 1 and e.stride(0) != 0 for _, e in encodings):
        return fast.sam2_prepare(*args)  # per-object encodings: sam2's way
    feats = [
        prev["maskmem_features"].to(device, non_blocking=True).flatten(2).permute(2, 0, 1)
        for _, prev in prevs
    ]
    cast = _autocast_dtype(device)
    distances: tuple[int, ...] = ()
    ptr_dtype = feats[0].dtype
    n_ptr_tokens = 0
    if self.use_obj_ptrs_in_encoder:
        pairs = _pointers(self, frame_idx, output_dict, num_frames, track_in_reverse, sel, unsel)
        if pairs:
            distances = tuple(int(d) for d, _ in pairs)
            ptrs = torch.stack([p for _, p in pairs], dim=0)
            ptr_dtype = ptrs.dtype
            if self.mem_dim < c:  # split each pointer into mem_dim-wide tokens
                ptrs = ptrs.reshape(-1, b, c // self.mem_dim, self.mem_dim)
                ptrs = ptrs.permute(0, 2, 1, 3).flatten(0, 1)
            if cast is not None and feats[0].dtype == cast:
                ptrs = ptrs.to(cast)  # every consumer rounds the memory to it
            feats.append(ptrs)
            n_ptr_tokens = ptrs.shape[0]
    key = (
        tuple((t, e.data_ptr(), tuple(e.shape[1:]), e.dtype) for t, e in encodings),
        distances,
        ptr_dtype,
        min(num_frames, self.max_obj_ptrs_in_encoder),
        cast,
        device,
    )
    cache = fast.pos_cache
    hit = cache.get(key)
    if hit is None:
        pos = _positions(self, encodings, distances, ptr_dtype, num_frames, device)
        # the encodings are held so their memory cannot be reused under the same key
        hit = (pos, [e for _, e in encodings])
        cache[key] = hit
        while len(cache) > POS_CACHE_SIZE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    memory = torch.cat(feats, dim=0)
    memory_pos = hit[0].expand(-1, b, -1)
    pix = self.memory_attention(
        curr=current_vision_feats,
        curr_pos=current_vision_pos_embeds,
        memory=memory,
        memory_pos=memory_pos,
        num_obj_ptr_tokens=n_ptr_tokens,
    )
    return pix.permute(1, 2, 0).view(b, c, h, w)


def install_fast_memory_assembly(predictor: Any, state: AccelState | None = None) -> bool:
    """Give ``predictor`` :func:`prepare_memory` (idempotent).

    Parameters
    ----------
    predictor : the sam2 video predictor.
    state : its :class:`~.state.AccelState` (default: the one on ``predictor``, made
        if none); sam2's method and the cache go in ``state.fast_memory``.

    Returns
    -------
    bool
        True when installed; False, leaving sam2's method, for a model whose method is
        not sam2 1.1.0's.
    """
    state = require_state(predictor) if state is None else state
    if state.fast_memory is not None:
        return True
    try:
        from sam2.modeling.sam2_base import SAM2Base
    except ImportError:
        return False
    method = getattr(type(predictor), "_prepare_memory_conditioned_features", None)
    if method is not SAM2Base._prepare_memory_conditioned_features:
        log.info("memory assembly keeps the model's own method")
        return False
    # bound through a weak reference: a method bound to the predictor and kept on it
    # would make a reference cycle, and the predictor (weights, graph pools) would wait
    # for the garbage collector instead of going when its last user lets go
    ref = weakref.ref(predictor)

    def sam2(*args: Any, **kwargs: Any) -> torch.Tensor:
        return method(ref(), *args, **kwargs)

    memory = FastMemory(sam2_prepare=sam2)

    def fast(*args: Any, **kwargs: Any) -> torch.Tensor:
        return prepare_memory(ref(), memory, *args, **kwargs)

    state.patches.set(predictor, "_prepare_memory_conditioned_features", fast)
    state.fast_memory = memory
    return True
