"""What the speed-ups may do (:class:`AccelOptions`) and what they did (:class:`AccelState`).

One :class:`AccelState` per predictor, on ``predictor._nsw_accel`` (:func:`state_of`),
holds everything the speed-ups keep: which ones are installed, their caches, sam2's
methods they fall back to, and the :class:`~.patches.Patches` log that
:func:`~napari_sam2_worms.backends.sam2.accel.uninstall` replays. The rule that
``torch.compile``'s own CUDA graphs and ours exclude each other lives here
(:func:`graphs_conflict`). Imports only :mod:`.patches` of the accel modules.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...base import BackendError
from .patches import Patches

if TYPE_CHECKING:
    from collections.abc import Callable

#: the one attribute the speed-ups put on a predictor (the :class:`AccelState`)
STATE_ATTR = "_nsw_accel"

#: torch.compile modes we accept ("default" compiles fastest)
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")
#: the modes among them that record CUDA graphs of their own
GRAPHING_COMPILE_MODES = ("reduce-overhead", "max-autotune")


class AccelOptionsError(BackendError, ValueError):
    """Speed-up options that cannot go together (or an unknown compile mode)."""


def graphs_conflict(compile_mode: str | None, cuda_graphs: bool) -> str | None:
    """Say why ``compile_mode`` and ``cuda_graphs`` exclude each other (None: they don't).

    Parameters
    ----------
    compile_mode : a mode of :data:`COMPILE_MODES`, or None (no compilation).
    cuda_graphs : whether our CUDA graphs (:mod:`.graphs`) are wanted.

    Returns
    -------
    str or None
        A one-line message naming the way out, or None.
    """
    if cuda_graphs and compile_mode in GRAPHING_COMPILE_MODES:
        return (
            f"torch.compile mode {compile_mode!r} records CUDA graphs of its own, which "
            "exclude ours: pass cuda_graphs=False, or compile mode 'default' or "
            "'max-autotune-no-cudagraphs'"
        )
    return None


@dataclass(frozen=True)
class AccelOptions:
    """Which speed-ups :func:`~napari_sam2_worms.backends.sam2.accel.install` puts on.

    Parameters
    ----------
    device_type : the predictor's device type (``"cuda"``, ``"cpu"``, ``"mps"``).
    fast_attention : the fast exact memory attention (:mod:`.memory_attention`); None
        means on CUDA only (the CPU's attention has no fast kernel for 64-wide values).
    compile : a torch.compile mode (:data:`COMPILE_MODES`) or None; CUDA only.
    cuda_graphs : replay CUDA graphs of the hot modules (:mod:`.graphs`); CUDA only.
    cpu : the CPU speed-ups (:mod:`.cpu`) on a CPU predictor.

    Raises
    ------
    AccelOptionsError
        An unknown compile mode, or a compile mode with CUDA graphs of its own asked
        for together with ours (:func:`graphs_conflict`).
    """

    device_type: str
    fast_attention: bool | None = None
    compile: str | None = None
    cuda_graphs: bool = True
    cpu: bool = True

    def __post_init__(self) -> None:
        """Validate the combination (see the class docstring)."""
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise AccelOptionsError(
                f"compile mode must be one of {', '.join(COMPILE_MODES)}, not {self.compile!r}"
            )
        conflict = graphs_conflict(self.compile, self.cuda_graphs)
        if conflict is not None:
            raise AccelOptionsError(conflict)

    @classmethod
    def for_backend(
        cls,
        device_type: str,
        *,
        fast_attention: bool | None = None,
        compile: bool | str = False,
        cuda_graphs: bool = True,
    ) -> AccelOptions:
        """Build the options from the backend's arguments (``compile=True``: "default")."""
        mode = None if not compile else "default" if compile is True else str(compile)
        return cls(device_type, fast_attention, mode, cuda_graphs)

    @property
    def cuda(self) -> bool:
        """Whether the predictor is on CUDA (most speed-ups are CUDA only)."""
        return self.device_type == "cuda"

    @property
    def wants_fast_attention(self) -> bool:
        """Whether to install the fast memory attention (None: on CUDA)."""
        return self.cuda if self.fast_attention is None else bool(self.fast_attention)


@dataclass
class FastMemory:
    """The fast memory-bank assembly (:mod:`.memory`): sam2's method and the cache."""

    #: sam2's ``_prepare_memory_conditioned_features``, bound (weakly) to the predictor
    sam2_prepare: Callable[..., Any]
    #: positional parts, keyed by memory layout (least recently used first)
    pos_cache: OrderedDict = field(default_factory=OrderedDict)


@dataclass
class FastAttention:
    """The fast memory attention (:mod:`.memory_attention`)."""

    #: sam2's ``MemoryAttention.forward`` (taken for shapes the fast one does not know)
    sam2_forward: Callable[..., Any]
    #: image tokens per frame the fast forward handles (``(image_size / 16) ** 2``)
    tokens: int
    #: per layer: the rotary tables and fused weights its forward reads (see
    #: :class:`~.memory_attention.LayerTables`)
    layers: list[Any] = field(default_factory=list)


@dataclass
class AccelState:
    """Everything the speed-ups installed on one predictor (see the module docstring).

    A field left at None / 0 / False means that speed-up is not installed.
    """

    options: AccelOptions
    #: every change made to sam2's objects, undone by ``uninstall``
    patches: Patches = field(default_factory=Patches)
    #: the prompt encoder's cached answers (:mod:`.prompt_cache`)
    prompt_cache: dict | None = None
    fast_memory: FastMemory | None = None
    #: depthwise convolutions run channels-last (:func:`.convs.channels_last_depthwise`)
    depthwise_convs: int = 0
    #: mask-downsampler stages fused into Triton kernels (:func:`.convs.fused_mask_stages`)
    fused_mask_stages: int = 0
    fast_attention: FastAttention | None = None
    #: the torch.compile mode the hot modules were compiled with (:mod:`.compile`)
    compiled: str | None = None
    #: the CUDA-graphed forwards (:mod:`.graphs`); [] when they were refused
    graphs: list[Any] | None = None
    #: memory cast to float32 before memory attention (off CUDA)
    fp32_memory: bool = False
    #: the CPU speed-ups that are on, e.g. ``{"bf16": False, "channels_last": True}``
    cpu: dict[str, bool] | None = None
    #: the CPU speed-ups asked for on this predictor (None in a value: its check decides)
    cpu_wanted: dict[str, bool] = field(default_factory=dict)

    def refuse_graphs(self) -> str | None:
        """Say why our CUDA graphs cannot go on now (None: they can)."""
        return graphs_conflict(self.compiled, True)

    def refuse_compile(self, mode: str) -> str | None:
        """Say why compiling in ``mode`` cannot happen now (None: it can).

        Graphs capture the forwards they wrap: compiling after them would compile the
        graph replay, not the modules.
        """
        if self.graphs is not None:
            return "this predictor already replays CUDA graphs; not compiling it"
        return None

    def describe(self) -> dict[str, Any]:
        """Summarise what is installed (for logs, benchmarks and tests)."""
        return {
            "prompt_cache": self.prompt_cache is not None,
            "fast_memory": self.fast_memory is not None,
            "depthwise_convs": self.depthwise_convs,
            "fused_mask_stages": self.fused_mask_stages,
            "fast_attention": self.fast_attention is not None,
            "compiled": self.compiled,
            "graphs": None if self.graphs is None else [g.name for g in self.graphs],
            "fp32_memory": self.fp32_memory,
            "cpu": self.cpu,
        }


def state_of(predictor: Any) -> AccelState | None:
    """Return the :class:`AccelState` of ``predictor`` (None: no speed-up installed)."""
    return getattr(predictor, STATE_ATTR, None)


def require_state(predictor: Any, options: AccelOptions | None = None) -> AccelState:
    """Return ``predictor``'s state, made (with ``options``) when it has none."""
    state = state_of(predictor)
    if state is None:
        if options is None:
            param = next(iter(predictor.parameters()), None)
            options = AccelOptions("cpu" if param is None else str(param.device.type))
        state = AccelState(options)
        setattr(predictor, STATE_ATTR, state)
    return state
