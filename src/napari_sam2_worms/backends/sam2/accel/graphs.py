"""CUDA graphs for SAM 2's modules: launch a whole module forward with one call.

With one or a few objects, a propagated frame costs the GPU a few milliseconds but
Python ~700 kernel launches (``benchmarks/sam2_profile.py``). :class:`GraphedForward`
replaces a module's ``forward``: after the same input signature (shapes, dtypes,
strides, non-tensor arguments, autocast state) was seen ``min_repeats`` times, it
captures one CUDA graph for it and from then on copies the inputs into the graph's
static buffers, replays it, and returns clones of the outputs. Shapes settle after the
first ~16 frames of a propagation (the memory bank and the object-pointer list have
filled), so a long propagation replays the same few graphs.

Safety rules this module keeps:

- outputs are cloned after each replay, so nothing handed out aliases graph memory and
  graphs can share one memory pool;
- a broadcast input (stride 0, e.g. one frame's features expanded over the objects)
  keeps its strides: one copy goes in, and the forward still sees it broadcast (the
  fast memory attention computes the shared first layer once only then);
- capture happens only inside :func:`capturing` (propagation), never during a click;
- a signature whose capture fails (an operation that synchronises, out of memory) is
  remembered and always runs eagerly; the failure is logged, not raised;
- at most ``max_graphs`` graphs per module (least recently used dropped).

The graphed forward computes exactly what the eager forward computes (same kernels,
same order); ``tests/gpu`` compares them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from .state import require_state, state_of

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .state import AccelState

log = logging.getLogger(__name__)

_state = threading.local()

#: modules of a SAM2VideoPredictor whose forward is graphed
GRAPHED_MODULES = ("image_encoder", "memory_attention", "sam_mask_decoder", "memory_encoder")


@contextlib.contextmanager
def capturing() -> Iterator[None]:
    """Allow graph capture in this thread inside the block (propagation)."""
    old = getattr(_state, "allowed", False)
    _state.allowed = True
    try:
        yield
    finally:
        _state.allowed = old


class _Graph:
    __slots__ = ("graph", "inputs", "outputs")

    def __init__(self, graph: Any, inputs: list, outputs: Any) -> None:
        self.graph, self.inputs, self.outputs = graph, inputs, outputs


class GraphedForward:
    """A drop-in ``forward`` that replays CUDA graphs for repeated input signatures.

    Parameters
    ----------
    fn : the forward to graph (eager or ``torch.compile``'d).
    name : for log messages.
    pool : a CUDA graph memory pool handle shared by all graphs (one per predictor).
    max_graphs : graphs kept (least recently used dropped).
    min_repeats : eager calls with a signature before it is captured.
    """

    def __init__(
        self,
        fn: Callable,
        name: str,
        pool: Any,
        *,
        max_graphs: int = 8,
        min_repeats: int = 2,
    ) -> None:
        self.fn = fn
        self.name = name
        self.pool = pool
        self.max_graphs = max_graphs
        self.min_repeats = min_repeats
        self.graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self.seen: OrderedDict[tuple, int] = OrderedDict()
        self.failed: set[tuple] = set()
        self.replays = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the forward: replay its graph for these input shapes, else run it eagerly."""
        import torch
        from torch.utils._pytree import tree_flatten

        flat, spec = tree_flatten((args, kwargs))
        key = self._key(flat)
        if key is None or key in self.failed:
            return self.fn(*args, **kwargs)
        g = self.graphs.get(key)
        if g is None:
            n = self.seen.get(key, 0) + 1
            self.seen[key] = n
            self.seen.move_to_end(key)
            while len(self.seen) > 64:
                self.seen.popitem(last=False)
            if n < self.min_repeats or not getattr(_state, "allowed", False):
                return self.fn(*args, **kwargs)
            g = self._capture(key, flat, spec)
            if g is None:
                return self.fn(*args, **kwargs)
        else:
            self.graphs.move_to_end(key)
        tensors = [x for x in flat if isinstance(x, torch.Tensor)]
        for buf, x in zip(g.inputs, tensors):
            buf.copy_(_collapse(x))
        g.graph.replay()
        self.replays += 1
        return _clone_tree(g.outputs)

    @staticmethod
    def _key(flat: list) -> tuple | None:
        """Hashable input signature, or None when the call cannot be graphed."""
        import torch

        parts: list = [torch.is_autocast_enabled("cuda"), torch.is_inference_mode_enabled()]
        has_tensor = False
        for x in flat:
            if isinstance(x, torch.Tensor):
                if not x.is_cuda or x.requires_grad:
                    return None
                has_tensor = True
                parts.append((tuple(x.shape), x.dtype, x.stride(), x.device.index))
            elif x is None or isinstance(x, (bool, int, float, str)):
                parts.append(("v", type(x).__name__, x))
            else:
                return None
        return tuple(parts) if has_tensor else None

    def _capture(self, key: tuple, flat: list, spec: Any) -> _Graph | None:
        import torch
        from torch.utils._pytree import tree_unflatten

        # a broadcast input (stride 0: one image expanded over the objects) stays
        # broadcast: the graph reads one copy, and the forward sees the same strides
        bases = [_collapse(x).clone() if isinstance(x, torch.Tensor) else None for x in flat]
        static = [b.expand(x.shape) if b is not None else x for b, x in zip(bases, flat)]
        s_args, s_kwargs = tree_unflatten(static, spec)
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.fn(*s_args, **s_kwargs)  # warm-up off the capture (cuDNN, lazy init)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                out = self.fn(*s_args, **s_kwargs)
        except Exception as exc:  # any capture failure means: run eagerly
            self.failed.add(key)
            log.info("CUDA graph of %s not captured (%s); it runs eagerly", self.name, exc)
            with contextlib.suppress(Exception):
                torch.cuda.synchronize()
            return None
        g = _Graph(graph, [b for b in bases if b is not None], out)
        self.graphs[key] = g
        while len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
        log.debug("captured a CUDA graph of %s (%d kept)", self.name, len(self.graphs))
        return g

    def reset(self) -> None:
        """Drop every graph.

        Their shared pool is freed once all are dropped: the backend does so for all
        modules when the GPU runs out of memory.
        """
        self.graphs.clear()
        self.seen.clear()
        self.failed.clear()


def _collapse(x: Any) -> Any:
    """``x`` without its broadcast dimensions (stride 0, size > 1: kept at size 1)."""
    for d, (size, stride) in enumerate(zip(x.shape, x.stride())):
        if stride == 0 and size > 1:
            x = x.narrow(d, 0, 1)
    return x


def _clone_tree(tree: Any) -> Any:
    import torch
    from torch.utils._pytree import tree_map

    return tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, tree)


def graph_predictor(
    predictor: Any, max_graphs: int = 8, state: AccelState | None = None
) -> list[GraphedForward]:
    """Wrap the forwards of ``predictor``'s hot modules (idempotent; CUDA only).

    Parameters
    ----------
    predictor : the sam2 video predictor (on CUDA).
    max_graphs : graphs kept per module (one per input shape).
    state : its :class:`~.state.AccelState` (default: the one on ``predictor``, made
        if none); ``state.graphs`` holds the wrappers.

    Returns
    -------
    list of GraphedForward
        One per module of :data:`GRAPHED_MODULES`; empty when the predictor was
        compiled with CUDA graphs of its own (:meth:`~.state.AccelState.refuse_graphs`).
    """
    import torch

    state = require_state(predictor) if state is None else state
    if state.graphs is not None:
        return state.graphs
    refused = state.refuse_graphs()
    if refused is not None:
        log.info("no CUDA graphs added: %s", refused)
        state.graphs = []
        return []
    pool = torch.cuda.graph_pool_handle()
    wrapped = []
    for name in GRAPHED_MODULES:
        module = getattr(predictor, name)
        g = GraphedForward(module.forward, name, pool, max_graphs=max_graphs)
        state.patches.set(module, "forward", g)
        wrapped.append(g)
    state.graphs = wrapped
    return wrapped


def graphed_forwards(predictor: Any) -> list[GraphedForward]:
    """Return the graphed forwards on ``predictor`` (empty: none)."""
    state = state_of(predictor)
    return [] if state is None or not state.graphs else list(state.graphs)
