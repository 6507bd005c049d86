"""SAM 2 backend: the adapter between the tracking session and ``SAM2VideoPredictor``.

It drives sam2's ``inference_state`` (built and, outside sam2, written only by
:mod:`.inference_state`; read here and in :mod:`.batched`). What it does differently
from sam2's demo code, and why:

- **No JPEG dump, no preload.** ``init_state`` is not called. The state dict is built
  exactly as sam2 1.1.0's ``init_state`` builds it, with ``images`` a
  :class:`~.frames.LazySam2Frames` (frames decoded, resized and normalised on
  demand, small LRU cache, optional read-ahead thread). Opening a video reads no frame;
  the first click reads one. Nothing depends on the video's length.
- **Prompts replace.** :meth:`Sam2Backend.set_prompts` first clears that object's
  inputs on that frame (sam2's per-object ``clear_all_prompts_in_frame``) and drops
  its previous output there, so the result depends only on the prompts given (sam2
  would otherwise feed the old mask logits back into the decoder). A frame that was
  already tracked is corrected with memory, as in sam2; a frame that was not is
  segmented from the prompts alone. Every prompted frame is a *conditioning* frame
  (``add_all_frames_to_correct_as_cond``), so propagation never overwrites it.
- **Objects any time.** sam2 1.1.0 accepts new object ids after tracking started.
  Older sam2 releases refuse them; then the state is reset and every stored prompt
  re-added (prompts are kept here for that), which only costs one decoder pass per
  prompt (image features are cached by sam2 for the last frame only).
- **Bounded memory.** After each propagated frame, non-conditioning outputs further
  than :attr:`Sam2Backend.memory_frames` frames from it are deleted: sam2's memory
  bank reads, for frame ``t``, only the conditioning frames, the non-conditioning
  frames ``t -/+ 1 .. (num_maskmem - 1) * stride`` and object pointers of the
  ``max_obj_ptrs_in_encoder - 1`` previous frames, so nothing it can read is lost.
  Conditioning (prompted) frames are always kept. sam2 caches backbone features of
  one frame only; the frame cache is an LRU of ``image_cache_frames`` frames.
- **Objects batched.** By default (``batch_objects=True``) propagation runs memory
  attention, the mask decoder and the memory encoder once per frame for all objects
  whose memory bank reads the same frames (:mod:`.batched`), instead of once per
  object as sam2 1.1.0 does; outputs are written back per object, so prompts, late
  objects, corrections and trimming are unchanged. Masks match the per-object path.
- **Overlaps.** Masks are resolved pixel-wise by the highest mask logit, like sam2's
  ``_apply_non_overlapping_constraints``; scores are sam2's object-score logits. The
  resolution happens on the device, and one (H, W) index image per frame (1 byte per
  pixel whatever the number of objects) is copied to the host, asynchronously: the
  next frame is queued on the GPU before the current one is handed over, so the
  caller's work on a frame (label stack, skeletons) overlaps the GPU's on the next.
- **Compiled and tuned on CUDA.** ``compile=True`` compiles the hot modules
  (:mod:`.accel.compile`); CUDA graphs replay the hot modules once shapes settle
  (:mod:`.accel.graphs`); the attention kernel is chosen by the number of objects.
- **Device.** CUDA (bf16 autocast + TF32), Apple MPS or CPU. A CUDA out-of-memory
  error becomes a :class:`BackendError` that says what to do; the cache is emptied
  and the backend stays usable.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import BackendError, BadPromptError, FrameResult, ObjectPrompts
from .accel.state import AccelOptions
from .checkpoints import DEFAULT_MODEL, load_predictor, resolve_checkpoint, resolve_device
from .frames import LazySam2Frames
from .inference_state import (
    drop_cached_features,
    drop_frame_output,
    new_state,
    trim_outputs,
)
from .input_size import check_input_size, resolve_input_size

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Generator, Iterator

    import torch

    from .results import PendingResult

log = logging.getLogger(__name__)

#: CUDA graphs are captured only while tracking at most this many objects (10 objects
#: on an H100, whose host is slower than the H200's: 36 -> 50 frames/s with graphs; at
#: 50 objects the GPU is the bottleneck and graphs only hold memory)
GRAPH_MAX_OBJECTS = 16

OOM_MESSAGE = (
    "GPU out of memory while running SAM 2 ({model}, {n} objects). Use a smaller model "
    "(sam2.1_hiera_tiny), track fewer objects at once, close other GPU programs, or "
    "offload the state to CPU (offload_state_to_cpu=True); device='cpu' always works."
)


class Sam2Backend:
    """Track objects with a SAM 2 / SAM 2.1 video predictor.

    Parameters
    ----------
    model : registry name (see :data:`.checkpoints.MODELS`).
    checkpoint : a local checkpoint file; else the cached one, else downloaded.
    device : "auto" (CUDA, MPS, CPU), "cuda", "cpu", ...
    download : allow downloading the checkpoint when it is not cached.
    image_cache_frames : prepared frames kept on the device (12 MB each at 1024 px).
    read_ahead : frames decoded ahead in a background thread during propagation (0 =
        off: on an H100 with an in-memory video the thread cost ~7 % frames/s; turn it
        on for slow decoders, e.g. long compressed videos).
    compile : ``torch.compile`` the hot modules (CUDA only): False, True (mode
        "default") or a mode name (see :mod:`.accel.compile`). The first propagated
        frames are slow while it compiles; clicks never compile. A mode with its own
        CUDA graphs plus ``cuda_graphs`` is refused (``AccelOptionsError``).
    offload_state_to_cpu : keep tracking memory on the CPU (less GPU memory, slower).
    memory_frames : non-conditioning outputs kept around the current frame (default:
        what sam2's memory bank can read, see the module docstring).
    image_size : the model's input size (:mod:`.input_size`): ``"auto"`` (1024 on a
        GPU; on the CPU the smallest of 1024, 768, 512 at least as large as the video's
        longer side, resolved when a video is opened), 1024 (the size the weights were
        trained at), 768 or 512 (faster, may lose detail on thin animals), or ``None``
        for the model's own (1024).
    predictor : an already loaded ``SAM2VideoPredictor`` to use instead of loading one.
    progress : ``callback(done_bytes, total_bytes)`` while downloading the checkpoint.
    batch_objects : on frames without prompts, track all objects in one batched forward
        pass (memory attention, mask decoder, memory encoder) instead of one pass per
        object as sam2 1.1.0 does; same masks (see :mod:`.batched`), faster with
        several objects. False uses sam2's own ``propagate_in_video``.
    cuda_graphs : on CUDA, replay CUDA graphs of the hot modules once their input
        shapes repeat (:mod:`.accel.graphs`); same results, far fewer kernel launches.
    fast_attention : give the predictor's memory attention an exact, cheaper forward
        (:mod:`.accel.memory_attention`: 64-dimensional values, real-arithmetic rotary encoding,
        the first layer shared by all objects); same function up to summation order.
        None (default): on CUDA only (PyTorch's CPU attention has no fast kernel for
        values narrower than keys: 3x slower there, measured).
    """

    name = "sam2"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        checkpoint: str | os.PathLike | None = None,
        device: str = "auto",
        download: bool = True,
        *,
        image_cache_frames: int = 4,
        read_ahead: int = 0,
        compile: bool | str = False,
        offload_state_to_cpu: bool = False,
        memory_frames: int | None = None,
        image_size: int | str | None = None,
        predictor: Any = None,
        progress: Callable[[int, int], None] | None = None,
        batch_objects: bool = True,
        cuda_graphs: bool = True,
        fast_attention: bool | None = None,
    ) -> None:
        self.model = model
        self.checkpoint = checkpoint
        self.download = download
        self.image_cache_frames = image_cache_frames
        self.read_ahead = read_ahead
        self.compile = compile
        self.offload_state_to_cpu = offload_state_to_cpu
        self.image_size = check_input_size(image_size)
        self.progress = progress
        self.batch_objects = batch_objects
        self.cuda_graphs = cuda_graphs
        self.fast_attention = fast_attention
        # refuse options that exclude each other now, not at the first video
        AccelOptions.for_backend(
            "cuda", fast_attention=fast_attention, compile=compile, cuda_graphs=cuda_graphs
        )
        #: tests/benchmarks: ``hook(frame, ids, video_res_logits)`` before overlaps are
        #: resolved (the per-object masks are ``logits[:, 0] > 0``)
        self.logits_hook: Callable[[int, list[int], Any], None] | None = None
        self.device = resolve_device(device)
        self.predictor = predictor
        self._memory_frames = memory_frames
        self.state: dict[str, Any] | None = None
        self.frames: LazySam2Frames | None = None
        self.video: Any = None
        self._prompts: dict[tuple[int, int], ObjectPrompts] = {}
        #: (the input-size setting, whether the video's shape was known) of the model
        #: this backend built; a predictor handed in is never rebuilt
        self._built_for: tuple[int | str | None, bool] = (None, True)

    # -- model --------------------------------------------------------------------------
    def load(self, frame_shape: tuple[int, ...] | None = None) -> None:
        """Resolve the checkpoint and load the model (done by :meth:`open` when needed).

        ``frame_shape`` (the video's shape) lets an ``"auto"`` input size fit the video on
        the CPU; without it ``auto`` means 1024 (:meth:`open` rebuilds the model when
        the video asks for another size).
        """
        if self.predictor is not None:
            self.device = next(self.predictor.parameters()).device
            return
        import torch

        size = resolve_input_size(self.image_size, self.device.type, frame_shape)

        path = resolve_checkpoint(
            self.model, self.checkpoint, self.download, progress=self.progress
        )
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.predictor = load_predictor(self.model, path, self.device, image_size=size)
        self._built_for = (self.image_size, frame_shape is not None)

    def _configure(self) -> None:
        """Put the settings and speed-ups on the predictor (:mod:`.setup`)."""
        from .setup import configure_predictor

        configure_predictor(
            self.predictor,
            self.device.type,
            fast_attention=self.fast_attention,
            compile=self.compile,
            cuda_graphs=self.cuda_graphs,
        )

    @property
    def recorded_settings(self) -> dict[str, Any]:
        """What a saved session records of this backend: the model and its input size."""
        size = self.image_size if self.predictor is None else int(self.predictor.image_size)
        return {"model": self.model, "input_size": size}

    @property
    def memory_frames(self) -> int:
        """Non-conditioning frames kept on each side of the current frame."""
        if self._memory_frames is not None:
            return int(self._memory_frames)
        p = self.predictor
        stride = int(getattr(p, "memory_temporal_stride_for_eval", 1))
        return max(int(p.num_maskmem) * stride, int(p.max_obj_ptrs_in_encoder)) + 1

    # -- session -------------------------------------------------------------------------
    def open(self, video: Any) -> None:
        """Attach to ``video`` ((T, H, W[, 3]) uint8, lazy). Reads no frame."""
        if self.predictor is not None and self._refit_needed(tuple(video.shape)):
            self.predictor = None  # built at "auto" before the video was known: refit
        if self.predictor is None:
            self.load(tuple(video.shape))
        else:
            self.device = next(self.predictor.parameters()).device
        self._configure()
        if self.frames is not None:
            self.frames.close()
        shape = tuple(video.shape)
        if len(shape) not in (3, 4) or shape[0] < 1:
            raise ValueError(f"a video must be (T, H, W) or (T, H, W, C), got shape {shape}")
        self.video = video
        self.frames = LazySam2Frames(
            video,
            self.predictor.image_size,
            self.device,
            cache_frames=self.image_cache_frames,
            read_ahead=self.read_ahead,
        )
        self.state = self._new_state(int(shape[0]), int(shape[1]), int(shape[2]))
        self._prompts.clear()

    def _refit_needed(self, shape: tuple[int, ...]) -> bool:
        """Tell whether the model needs rebuilding for a video of ``shape``.

        True when this backend built it at ``"auto"`` without knowing the video, and
        ``auto`` picks another size for ``shape``.
        """
        setting, knew_shape = self._built_for
        if setting != "auto" or knew_shape:
            return False
        wanted = resolve_input_size("auto", self.device.type, shape)
        return wanted != int(self.predictor.image_size)

    def _new_state(self, n_frames: int, height: int, width: int) -> dict[str, Any]:
        """Build sam2's inference state for this video (:func:`.inference_state.new_state`)."""
        import torch

        storage = torch.device("cpu") if self.offload_state_to_cpu else self.device
        return new_state(
            self.frames, n_frames, height, width, self.device, storage, self.offload_state_to_cpu
        )

    def _require_open(self) -> dict[str, Any]:
        if self.state is None:
            raise BackendError("the SAM 2 backend has no video: call open(video) first")
        return self.state

    @contextlib.contextmanager
    def _compute(self, propagating: bool = False) -> Iterator[None]:
        """Compute in inference mode with bf16 autocast on CUDA.

        On the CPU autocast is where :mod:`.accel.cpu` says. OOM -> BackendError (backend
        usable). Outside propagation, compiled modules run eagerly (a click never
        compiles).
        """
        import torch

        from .accel.compile import attention_kernels, eager
        from .accel.cpu import autocast
        from .accel.graphs import graphed_forwards

        n_obj = len(self.state["obj_ids"]) if self.state else 1
        try:
            with (
                torch.inference_mode(),
                autocast(self.predictor, self.device),
                attention_kernels(n_obj, self.device),
                contextlib.nullcontext() if propagating else eager(self.predictor),
            ):
                yield
        except torch.cuda.OutOfMemoryError as exc:
            if self.state is not None:
                drop_cached_features(self.state)
            if self.frames is not None:
                self.frames.clear()
            for graphed in graphed_forwards(self.predictor):
                graphed.reset()  # their memory pool is what empty_cache cannot free
            torch.cuda.empty_cache()
            n = len(self.state["obj_ids"]) if self.state else 0
            raise BackendError(OOM_MESSAGE.format(model=self.model, n=n)) from exc

    # -- prompts -------------------------------------------------------------------------
    def _check_prompts(self, frame: int, prompts: ObjectPrompts) -> None:
        state = self._require_open()
        h, w = state["video_height"], state["video_width"]
        if not 0 <= frame < state["num_frames"]:
            raise BadPromptError(
                f"frame {frame} is outside the video (0..{state['num_frames'] - 1})"
            )
        if prompts.mask is not None:
            if tuple(np.shape(prompts.mask)) != (h, w):
                raise BadPromptError(
                    f"the painted mask is {np.shape(prompts.mask)}, the video is {(h, w)}"
                )
            return
        pts = np.asarray(prompts.points, np.float32).reshape(-1, 2)
        if len(pts) != len(np.asarray(prompts.labels).reshape(-1)):
            raise BadPromptError("each point needs one label (1 = positive, 0 = negative)")
        if len(pts) and (
            (pts[:, 0] < 0).any()
            or (pts[:, 0] > w).any()
            or (pts[:, 1] < 0).any()
            or (pts[:, 1] > h).any()
        ):
            raise BadPromptError(f"a point is outside the {w}x{h} frame")
        if prompts.box is not None:
            x0, y0, x1, y1 = prompts.box
            if not (x1 > x0 and y1 > y0):
                raise BadPromptError("a box needs x1 > x0 and y1 > y0")

    def set_prompts(self, frame: int, object_id: int, prompts: ObjectPrompts) -> FrameResult:
        """Replace ``object_id``'s prompts on ``frame``; return that frame's masks."""
        frame, object_id = int(frame), int(object_id)
        self._check_prompts(frame, prompts)
        state = self.state
        with self._compute():
            self._clear_frame_object(frame, object_id)
            if prompts.is_empty():
                self._prompts.pop((frame, object_id), None)
                if not any(o == object_id for _, o in self._prompts):
                    self.predictor.remove_object(state, object_id, need_output=False)
            else:
                self._prompts[(frame, object_id)] = prompts
                self._add(frame, object_id, prompts)
            return self._frame_result(frame)

    def _clear_frame_object(self, frame: int, object_id: int) -> None:
        """Forget one object's inputs and output on one frame (others are untouched)."""
        state = self._require_open()
        if object_id not in state["obj_id_to_idx"]:
            return
        self.predictor.clear_all_prompts_in_frame(state, frame, object_id, need_output=False)
        drop_frame_output(state, state["obj_id_to_idx"][object_id], frame)

    def _add(self, frame: int, object_id: int, prompts: ObjectPrompts) -> None:
        try:
            self._add_raw(frame, object_id, prompts)
        except RuntimeError as exc:
            if "after tracking starts" not in str(exc):
                raise
            log.info("sam2 refused object %d after tracking; re-adding all prompts", object_id)
            self._replay()

    def _add_raw(self, frame: int, object_id: int, prompts: ObjectPrompts) -> None:
        p, state = self.predictor, self.state
        if prompts.mask is not None:
            p.add_new_mask(state, frame, object_id, np.asarray(prompts.mask, bool))
            return
        pts = np.asarray(prompts.points, np.float32).reshape(-1, 2)
        labels = np.asarray(prompts.labels, np.int32).reshape(-1)
        box = None if prompts.box is None else np.asarray(prompts.box, np.float32)
        p.add_new_points_or_box(
            state,
            frame,
            object_id,
            points=pts if len(pts) else None,
            labels=labels if len(pts) else None,
            box=box,
            clear_old_points=True,
            normalize_coords=True,
        )

    def _replay(self) -> None:
        """Reset sam2's state and add every stored prompt again (older sam2 releases)."""
        self.predictor.reset_state(self.state)
        for (f, o), pr in sorted(self._prompts.items()):
            self._add_raw(f, o, pr)

    def remove_object(self, object_id: int) -> None:
        """Forget ``object_id`` and all its prompts and memory."""
        state = self._require_open()
        for key in [k for k in self._prompts if k[1] == object_id]:
            del self._prompts[key]
        with self._compute():
            self.predictor.remove_object(state, int(object_id), need_output=False)

    # -- results -------------------------------------------------------------------------
    def _output(self, obj_idx: int, frame: int) -> dict | None:
        state = self._require_open()
        for store in (
            state["temp_output_dict_per_obj"][obj_idx],
            state["output_dict_per_obj"][obj_idx],
        ):
            for key in ("cond_frame_outputs", "non_cond_frame_outputs"):
                out = store[key].get(frame)
                if out is not None:
                    return out
        return None

    def _frame_result(self, frame: int) -> FrameResult:
        """Masks and scores of every object that has an output on ``frame``."""
        import torch
        import torch.nn.functional as F

        state = self._require_open()
        ids, logits, scores = [], [], {}
        for obj_id, idx in state["obj_id_to_idx"].items():
            out = self._output(idx, frame)
            if out is None:
                continue
            ids.append(obj_id)
            logits.append(out["pred_masks"].to(self.device).float())
            scores[obj_id] = out["object_score_logits"]
        if not ids:
            return FrameResult(frame, {}, {})
        size = (state["video_height"], state["video_width"])
        video_res = F.interpolate(
            torch.cat(logits), size=size, mode="bilinear", align_corners=False
        )
        return self._to_result(frame, ids, video_res, scores)

    def _to_result(
        self, frame: int, ids: list[int], video_res: torch.Tensor, scores: dict[int, Any]
    ) -> FrameResult:
        """(N, 1, H, W) logits -> non-overlapping masks (highest logit wins), now."""
        return self._launch(frame, ids, video_res, scores).finish()

    def _launch(
        self, frame: int, ids: list[int], video_res: torch.Tensor, scores: dict[int, Any]
    ) -> PendingResult:
        """Resolve overlaps on the device and start the host copy (:mod:`.results`)."""
        from .results import launch_result

        if self.logits_hook is not None:
            self.logits_hook(frame, list(ids), video_res)
        return launch_result(frame, ids, video_res, scores)

    # -- propagation ---------------------------------------------------------------------
    def propagate(self, start: int, stop: int, reverse: bool = False) -> Iterator[FrameResult]:
        """Track all objects from ``start`` to ``stop`` (inclusive), one result per frame."""
        state = self._require_open()
        start, stop = int(start), int(stop)
        n = state["num_frames"]
        if not (0 <= start < n and 0 <= stop < n):
            raise ValueError(f"frames {start}..{stop} are outside the video (0..{n - 1})")
        if (stop < start and not reverse) or (stop > start and reverse):
            raise ValueError(
                f"cannot propagate {'backward' if reverse else 'forward'} from {start} to {stop}"
            )
        if not state["obj_ids"]:
            raise BadPromptError("no prompts yet: click on at least one animal first")
        if start == stop:
            reverse = False  # one frame; sam2 skips reverse tracking that starts at frame 0
        return self._propagate(start, abs(stop - start), reverse)

    def _propagate(self, start: int, count: int, reverse: bool) -> Iterator[FrameResult]:
        if self.frames is not None:
            self.frames.set_direction(reverse)
        from .batched import can_batch

        if self.batch_objects and can_batch(self.predictor):
            return self._propagate_batched(start, count, reverse)
        return self._propagate_per_object(start, count, reverse)

    def _propagate_batched(self, start: int, count: int, reverse: bool) -> Iterator[FrameResult]:
        from .batched import propagate_batched

        inner = propagate_batched(
            self.predictor, self._require_open(), start, count, reverse, self.memory_frames
        )

        def step() -> PendingResult | None:
            try:
                frame, obj_ids, video_res, scores = next(inner)
            except StopIteration:
                return None
            return self._launch(frame, obj_ids, video_res, dict(zip(obj_ids, scores)))

        return self._pipelined(inner, step)

    def _propagate_per_object(self, start: int, count: int, reverse: bool) -> Iterator[FrameResult]:
        state = self._require_open()
        inner = self.predictor.propagate_in_video(
            state, start_frame_idx=start, max_frame_num_to_track=count, reverse=reverse
        )

        def step() -> PendingResult | None:
            try:
                frame, obj_ids, video_res = next(inner)
            except StopIteration:
                return None
            scores = {}
            for o in obj_ids:
                out = self._output(state["obj_id_to_idx"][o], frame)
                if out is not None:
                    scores[o] = out["object_score_logits"]
            return self._launch(frame, list(obj_ids), video_res, scores)

        return self._pipelined(inner, step)

    def _pipelined(
        self, inner: Generator, step: Callable[[], PendingResult | None]
    ) -> Iterator[FrameResult]:
        """On CUDA, yield frame ``t`` only after frame ``t + 1`` is queued on the device.

        The host copy of ``t`` was queued before ``t + 1``'s work, so waiting for it
        leaves the GPU busy with ``t + 1`` while the caller handles ``t``. Elsewhere the
        work is synchronous: each frame is yielded as soon as it is computed (a frame
        of look-ahead would only delay the display and a cancel).
        """
        from .accel.graphs import capturing

        # graphs pay where launches dominate (up to ~10 objects); with more objects the
        # GPU is the bottleneck and a graph would only hold memory (docs/performance.md)
        n_obj = len(self._require_open()["obj_ids"])
        graphs = capturing if n_obj <= GRAPH_MAX_OBJECTS else contextlib.nullcontext
        pending = None
        try:
            while True:
                try:
                    with self._compute(propagating=True), graphs():
                        launched = step()
                        if launched is not None:
                            self._trim(launched.frame)
                except BaseException:
                    if pending is not None:  # hand over the frame already computed
                        done, pending = pending.finish(), None
                        yield done
                    raise
                if pending is not None:
                    yield pending.finish()
                if launched is None:
                    return
                pending = launched
                if launched.event is None:  # synchronous (CPU/MPS): no look-ahead
                    pending = None
                    yield launched.finish()
        finally:
            inner.close()

    def _trim(self, frame: int) -> None:
        """Delete non-conditioning outputs the memory bank can no longer read (see top)."""
        trim_outputs(self._require_open(), frame, self.memory_frames)

    def stored_frames(self) -> int:
        """Count the per-object frame outputs held in memory (for tests/benchmarks)."""
        state = self._require_open()
        return sum(
            len(d["cond_frame_outputs"]) + len(d["non_cond_frame_outputs"])
            for d in state["output_dict_per_obj"].values()
        )

    # -- lifetime ------------------------------------------------------------------------
    def reset(self) -> None:
        """Drop all prompts and tracking memory; keep the model and the video."""
        state = self._require_open()
        self._prompts.clear()
        with self._compute():
            self.predictor.reset_state(state)

    def close(self) -> None:
        """Release the model, the state and cached frames (GPU memory)."""
        if self.frames is not None:
            self.frames.close()
        self.frames = None
        self.state = None
        self.predictor = None
        self._prompts.clear()
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
