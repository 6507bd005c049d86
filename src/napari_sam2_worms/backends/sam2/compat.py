"""The sam2 versions this package was tested with, every sam2 name it relies on, a check.

The SAM 2 backend and its speed-ups call sam2's private methods
(``_run_single_frame_inference``, ``_get_image_feature``, ...), replace some of them
(``_prepare_memory_conditioned_features``, ``_forward_sam_heads``, the memory
attention's and the prompt encoder's ``forward``), read instance attributes of the
model and its submodules, build sam2's ``inference_state`` dict themselves and name
sam2's hydra configs. None of that is sam2's public API, so each use is listed here,
and :func:`check_sam2_compat` (run by :func:`.checkpoints.load_predictor`
on every predictor it builds) verifies that the installed sam2 still has them:

- a missing or changed name raises :class:`Sam2CompatError`, one line naming every
  missing name, the installed and the tested sam2 version;
- all names present but another sam2 version than :data:`TESTED_VERSIONS`: one
  warning per process (``logging``), and the predictor is used.

Tested: sam2 1.1.0 from PyPI, whose ``sam2/`` package equals Meta's repository
(facebookresearch/sam2) at commit :data:`TESTED_COMMIT` apart from packaging metadata.
Meta's earlier "1.0" (its repository before 11 December 2024, never on PyPI) keeps one
output dict for all objects (no ``output_dict_per_obj`` nor ``frames_tracked_per_obj``)
and fails the check. ``pyproject.toml`` bounds the dependency to ``sam2>=1.1,<1.2``.

When you use a new sam2 name, list it here (``tests/core/test_sam2_compat.py`` greps
our sources for private names sam2 defines and fails on any not listed).
Importing this module imports neither torch nor sam2.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from dataclasses import dataclass
from typing import Any

from ..base import BackendError

log = logging.getLogger(__name__)

#: sam2 releases the backend was tested with (``importlib.metadata.version("sam2")``)
TESTED_VERSIONS: tuple[str, ...] = ("1.1.0",)
#: facebookresearch/sam2 commit whose ``sam2/`` package is PyPI's sam2 1.1.0
TESTED_COMMIT = "2b90b9f"

_P = "sam2.sam2_video_predictor.SAM2VideoPredictor"
_BASE = "sam2.modeling.sam2_base.SAM2Base"
_MA = "sam2.modeling.memory_attention.MemoryAttention"
_PE = "sam2.modeling.sam.prompt_encoder.PromptEncoder"


@dataclass(frozen=True)
class Sam2Name:
    """One sam2 class, function or method we use.

    Attributes
    ----------
    owner : dotted path of the module (for a module-level name) or of the class.
    name : the attribute of ``owner``.
    params : parameter names we pass, separated by spaces (with ``exact``: the whole
        signature, without ``self``).
    exact : we replace it with a drop-in of our own: its parameters must be exactly
        ``params`` (sam2 calls our replacement with them).
    users : our modules that use it.
    """

    owner: str
    name: str
    params: str = ""
    exact: bool = False
    users: str = ""

    @property
    def param_names(self) -> list[str]:
        """:attr:`params` as a list."""
        return self.params.split()

    @property
    def label(self) -> str:
        """``Class.name`` or ``module.name``, as messages show it."""
        return f"{self.owner.rsplit('.', 1)[-1]}.{self.name}"


#: classes and module-level functions (imported or checked with ``type(...) is``)
CLASSES: tuple[Sam2Name, ...] = (
    Sam2Name("sam2.sam2_video_predictor", "SAM2VideoPredictor", users="checkpoints"),
    Sam2Name("sam2.sam2_video_predictor", "SAM2VideoPredictorVOS", users="accel.compile"),
    Sam2Name("sam2.modeling.sam2_base", "SAM2Base", users="accel.memory"),
    Sam2Name("sam2.modeling.memory_attention", "MemoryAttention", users="accel.memory_attention"),
    Sam2Name(
        "sam2.modeling.memory_attention", "MemoryAttentionLayer", users="accel.memory_attention"
    ),
    Sam2Name(
        "sam2.modeling.sam.transformer", "RoPEAttention", users="accel.memory_attention accel.cpu"
    ),
    Sam2Name("sam2.modeling.sam.prompt_encoder", "PromptEncoder", users="accel.prompt_cache"),
    Sam2Name("sam2.modeling.sam2_utils", "LayerNorm2d", users="accel.convs accel.cpu"),
    Sam2Name(
        "sam2.modeling.sam2_utils",
        "select_closest_cond_frames",
        "frame_idx cond_frame_outputs max_cond_frame_num",
        users="accel.memory",
    ),
    Sam2Name("sam2.modeling.sam2_utils", "get_1d_sine_pe", "pos_inds dim", users="accel.memory"),
    Sam2Name("sam2.utils.misc", "fill_holes_in_mask_scores", "mask max_area", users="batched"),
    Sam2Name(
        "sam2.build_sam",
        "build_sam2_video_predictor",
        "config_file ckpt_path device hydra_overrides_extra",
        users="checkpoints",
    ),
    # RoPEAttention.compute_cis is a partial of it, called with end_x=, end_y=
    Sam2Name(
        "sam2.modeling.position_encoding",
        "compute_axial_cis",
        "dim end_x end_y theta",
        users="accel.memory_attention",
    ),
    # frames normalises frames as it does (DEFAULTS checks the values)
    Sam2Name("sam2.utils.misc", "load_video_frames", "img_mean img_std", users="frames"),
    # tests/core/test_sam2_attention.py compares our rotation with sam2's
    Sam2Name("sam2.modeling.position_encoding", "apply_rotary_enc", users="accel.cpu tests"),
)

#: methods of sam2's classes we call, wrap or replace
METHODS: tuple[Sam2Name, ...] = (
    # public methods of the video predictor (called by the adapter)
    Sam2Name(
        _P,
        "add_new_points_or_box",
        "inference_state frame_idx obj_id points labels box clear_old_points normalize_coords",
        users="adapter",
    ),
    Sam2Name(_P, "add_new_mask", "inference_state frame_idx obj_id mask", users="adapter"),
    Sam2Name(
        _P,
        "clear_all_prompts_in_frame",
        "inference_state frame_idx obj_id need_output",
        users="adapter",
    ),
    Sam2Name(_P, "remove_object", "inference_state obj_id need_output", users="adapter"),
    Sam2Name(_P, "reset_state", "inference_state", users="adapter"),
    Sam2Name(
        _P,
        "propagate_in_video",
        "inference_state start_frame_idx max_frame_num_to_track reverse",
        users="adapter",
    ),
    # never called: inference_state.new_state builds the dict it returns (INFERENCE_STATE_KEYS)
    Sam2Name(_P, "init_state", "video_path offload_state_to_cpu", users="adapter"),
    Sam2Name(_P, "propagate_in_video_preflight", "inference_state", users="batched"),
    Sam2Name(
        _P,
        "track_step",
        "frame_idx is_init_cond_frame current_vision_feats current_vision_pos_embeds "
        "feat_sizes point_inputs mask_inputs output_dict num_frames track_in_reverse "
        "run_mem_encoder prev_sam_mask_logits",
        users="batched",
    ),
    # private methods
    Sam2Name(
        _P,
        "_run_single_frame_inference",
        "inference_state output_dict frame_idx batch_size is_init_cond_frame "
        "point_inputs mask_inputs reverse run_mem_encoder",
        users="batched",
    ),
    Sam2Name(
        _P,
        "_get_image_feature",
        "inference_state frame_idx batch_size",
        users="batched",
    ),
    Sam2Name(_P, "_get_maskmem_pos_enc", "inference_state current_out", users="batched"),
    Sam2Name(
        _P,
        "_get_orig_video_res_output",
        "inference_state any_res_masks",
        users="batched",
    ),
    Sam2Name(
        _P,
        "_forward_sam_heads",
        "backbone_features point_inputs mask_inputs",
        users="accel.prompt_cache (wrapped)",
    ),
    Sam2Name(
        _BASE,
        "_prepare_memory_conditioned_features",
        "frame_idx is_init_cond_frame current_vision_feats current_vision_pos_embeds "
        "feat_sizes output_dict num_frames track_in_reverse",
        exact=True,
        users="accel.memory (replaced)",
    ),
    Sam2Name(
        _MA,
        "forward",
        "curr memory curr_pos memory_pos num_obj_ptr_tokens",
        exact=True,
        users="accel.memory_attention (replaced)",
    ),
    Sam2Name(
        _PE,
        "forward",
        "points boxes masks",
        exact=True,
        users="accel.prompt_cache (replaced)",
    ),
    Sam2Name(_PE, "get_dense_pe", "", exact=True, users="accel.prompt_cache (replaced)"),
    Sam2Name(
        "sam2.modeling.backbones.hieradet.Hiera",
        "_get_pos_embed",
        "hw",
        users="accel.cpu (cached per input size)",
    ),
    # tests/core/test_sam2_prompt_cache.py counts its calls
    Sam2Name(_PE, "_embed_points", "points labels pad", users="tests"),
    # benchmarks/sam2_profile.py times it
    Sam2Name(_P, "_encode_new_memory", "current_vision_feats", users="benchmarks"),
)

#: instance attributes of a built predictor, by the path of the object that holds them
#: ("" is the predictor; a number indexes a module list)
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "": (
        # submodules (accel.compile, accel.graphs, setup, accel.memory_attention, ...)
        "image_encoder",
        "memory_attention",
        "memory_encoder",
        "sam_mask_decoder",
        "sam_prompt_encoder",
        # settings the adapter sets (setup)
        "add_all_frames_to_correct_as_cond",
        "clear_non_cond_mem_around_input",
        "fill_hole_area",
        # read by the adapter, the batched path and the memory assembly
        "image_size",
        "num_maskmem",
        "memory_temporal_stride_for_eval",
        "max_obj_ptrs_in_encoder",
        "max_cond_frames_in_attn",
        "non_overlap_masks_for_mem_enc",
        "only_obj_ptrs_in_the_past_for_eval",
        "use_signed_tpos_enc_to_obj_ptrs",
        "use_obj_ptrs_in_encoder",
        "add_tpos_enc_to_obj_ptrs",
        "proj_tpos_enc_in_obj_ptrs",
        "maskmem_tpos_enc",
        "obj_ptr_tpos_proj",
        "hidden_dim",
        "mem_dim",
        "sam_image_embedding_size",
    ),
    "memory_attention": ("layers", "batch_first", "pos_enc_at_input", "norm"),
    "memory_attention.layers.0": (
        "self_attn",
        "cross_attn_image",
        "norm1",
        "norm2",
        "norm3",
        "linear1",
        "linear2",
        "activation",
        "pos_enc_at_attn",
        "pos_enc_at_cross_attn_queries",
        "pos_enc_at_cross_attn_keys",
    ),
    "memory_attention.layers.0.self_attn": (
        "q_proj",
        "k_proj",
        "v_proj",
        "out_proj",
        "num_heads",
        "rope_k_repeat",
        "compute_cis",
    ),
    "memory_attention.layers.0.cross_attn_image": (
        "q_proj",
        "k_proj",
        "v_proj",
        "out_proj",
        "num_heads",
        "rope_k_repeat",
        "compute_cis",
    ),
    # a functools.partial: its keywords key the rotary tables (accel.memory_attention)
    "memory_attention.layers.0.self_attn.compute_cis": ("keywords",),
    "memory_encoder": ("mask_downsampler",),
    "memory_encoder.mask_downsampler": ("encoder",),
    # a LayerNorm2d of the first mask stage, fused by accel.convs / accel.triton_kernels
    "memory_encoder.mask_downsampler.encoder.1": ("weight", "bias", "eps"),
    "sam_prompt_encoder": ("point_embeddings",),
}

#: the keys of sam2's ``init_state`` dict (``Sam2Backend._new_state`` builds exactly these)
INFERENCE_STATE_KEYS: tuple[str, ...] = (
    "images",
    "num_frames",
    "offload_video_to_cpu",
    "offload_state_to_cpu",
    "video_height",
    "video_width",
    "device",
    "storage_device",
    "point_inputs_per_obj",
    "mask_inputs_per_obj",
    "cached_features",
    "constants",
    "obj_id_to_idx",
    "obj_idx_to_id",
    "obj_ids",
    "output_dict_per_obj",
    "temp_output_dict_per_obj",
    "frames_tracked_per_obj",
)

#: keys of one object's output on a frame (batched makes them, the adapter reads them)
OUTPUT_KEYS: tuple[str, ...] = (
    "maskmem_features",
    "maskmem_pos_enc",
    "pred_masks",
    "obj_ptr",
    "object_score_logits",
)
#: keys of ``output_dict_per_obj[idx]`` and ``temp_output_dict_per_obj[idx]``
OUTPUT_DICT_KEYS: tuple[str, ...] = ("cond_frame_outputs", "non_cond_frame_outputs")

#: what sam2's code does that ours relies on: (module.Class.method, code, why); matched
#: with all whitespace removed
BEHAVIOURS: tuple[tuple[str, str, str], ...] = (
    (
        f"{_P}._get_image_feature",
        'inference_state["images"][frame_idx].to(device)',
        "frames are read one at a time from inference_state['images'] (frames)",
    ),
    (
        f"{_BASE}._track_step",
        "self._forward_sam_heads(backbone_features=pix_feat,point_inputs=point_inputs,"
        "mask_inputs=mask_inputs,",
        "_forward_sam_heads is called with keywords (accel.prompt_cache)",
    ),
    (
        f"{_P}.propagate_in_video",
        '"reverse":reverse',
        "frames_tracked_per_obj[idx][frame] = {'reverse': ...} (batched)",
    ),
)

#: default arguments of sam2 functions whose values we copy: (module.function, parameter,
#: our module, our constant)
DEFAULTS: tuple[tuple[str, str, str, str], ...] = (
    ("sam2.utils.misc.load_video_frames", "img_mean", ".frames", "IMG_MEAN"),
    ("sam2.utils.misc.load_video_frames", "img_std", ".frames", "IMG_STD"),
)

#: hydra config keys we override (checkpoints.build_model: ``++model.image_size``)
CONFIG_KEYS: tuple[str, ...] = ("image_size",)
#: state-dict keys checkpoints.py reads to name the model a file is for
CHECKPOINT_KEYS: tuple[str, ...] = (
    "image_encoder.trunk.patch_embed.proj.weight",
    "image_encoder.trunk.blocks.0.",
)
#: state-dict key present in SAM 2.1 checkpoints only (its config says so)
SAM21_CONFIG_LINE = "no_obj_embed_spatial: true"


class Sam2CompatError(BackendError):
    """The installed sam2 lacks (or changed) a name this package relies on."""


def installed_version() -> str | None:
    """Return the installed sam2's version, or None (e.g. a source checkout on the path)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sam2")
    except PackageNotFoundError:
        return None


def _resolve(dotted: str) -> Any:
    """Import ``a.b.C`` (a module, or a class inside one); AttributeError/ImportError."""
    try:
        return importlib.import_module(dotted)
    except ImportError:
        module, _, attr = dotted.rpartition(".")
        if not module:
            raise
        return getattr(importlib.import_module(module), attr)


def _parameters(fn: Any) -> list[str] | None:
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None
    return params[1:] if params[:1] == ["self"] else params


def _check_name(entry: Sam2Name) -> str | None:
    """Say what is wrong with ``entry`` in the installed sam2 (None: nothing)."""
    try:
        obj = getattr(_resolve(entry.owner), entry.name)
    except (ImportError, AttributeError):
        return f"{entry.label} (missing)"
    if not entry.params and not entry.exact:
        return None
    params = _parameters(obj)
    if params is None:
        return None  # no signature to compare (a builtin): the name exists
    if entry.exact:
        if params != entry.param_names:
            return f"{entry.label} (parameters {params}, expected {entry.param_names})"
        return None
    lacking = [p for p in entry.param_names if p not in params]
    if lacking:
        return f"{entry.label} (no parameter {', '.join(lacking)})"
    return None


def _source(dotted: str) -> str | None:
    """Source text of ``module.Class.method`` without whitespace (None: unavailable)."""
    owner, _, name = dotted.rpartition(".")
    try:
        return re.sub(r"\s+", "", inspect.getsource(getattr(_resolve(owner), name)))
    except (ImportError, AttributeError, OSError, TypeError):
        return None


def _check_state_keys() -> list[str]:
    """``init_state``'s keys against :data:`INFERENCE_STATE_KEYS` (source read)."""
    src = _source(f"{_P}.init_state")
    if src is None:
        return []
    keys = set(re.findall(r'inference_state\["(\w+)"\]=', src))
    problems = []
    if keys - set(INFERENCE_STATE_KEYS):
        problems.append(f"inference_state keys {sorted(keys - set(INFERENCE_STATE_KEYS))} (new)")
    if set(INFERENCE_STATE_KEYS) - keys:
        problems.append(
            f"inference_state keys {sorted(set(INFERENCE_STATE_KEYS) - keys)} (missing)"
        )
    module = _source_module("sam2.sam2_video_predictor")
    if module is not None:
        for key in (*OUTPUT_KEYS, *OUTPUT_DICT_KEYS):
            if f'"{key}"' not in module:
                problems.append(f"output key {key!r} (missing)")
    return problems


def _source_module(name: str) -> str | None:
    try:
        return inspect.getsource(importlib.import_module(name))
    except (ImportError, OSError, TypeError):
        return None


def _check_behaviours() -> list[str]:
    problems = []
    for where, code, why in BEHAVIOURS:
        src = _source(where)
        if src is not None and re.sub(r"\s+", "", code) not in src:
            problems.append(f"{'.'.join(where.split('.')[-2:])}: {why} (changed)")
    return problems


def _check_defaults() -> list[str]:
    problems = []
    for where, param, module, constant in DEFAULTS:
        owner, _, name = where.rpartition(".")
        try:
            default = inspect.signature(getattr(_resolve(owner), name)).parameters[param].default
        except (ImportError, AttributeError, KeyError, TypeError, ValueError):
            continue  # a missing function or parameter is reported by _check_name
        ours = getattr(importlib.import_module(module, __package__), constant)
        if not isinstance(default, (tuple, list)) or tuple(default) != tuple(ours):
            problems.append(f"{name}({param}={default}) (changed; we use {tuple(ours)})")
    return problems


def _check_configs() -> list[str]:
    """Every registry model's hydra config exists in the sam2 package with our keys."""
    from importlib.resources import files

    from .checkpoints import MODELS

    problems = []
    try:
        root = files("sam2")
    except (ImportError, TypeError):
        return ["the sam2 package (missing)"]
    for info in MODELS.values():
        path = root.joinpath(*info.config.split("/"))
        try:
            text = path.read_text()
        except OSError:
            problems.append(f"config {info.config} (missing)")
            continue
        for key in CONFIG_KEYS:
            if not re.search(rf"^\s+{key}:", text, re.MULTILINE):
                problems.append(f"config {info.config}: key model.{key} (missing)")
        if info.family == "sam2.1" and SAM21_CONFIG_LINE not in text:
            problems.append(f"config {info.config}: {SAM21_CONFIG_LINE} (missing)")
    return problems


def _walk(predictor: Any, path: str) -> Any:
    obj = predictor
    for part in filter(None, path.split(".")):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def _check_attributes(predictor: Any) -> list[str]:
    problems = []
    for path, names in ATTRIBUTES.items():
        try:
            obj = _walk(predictor, path)
        except (AttributeError, IndexError, TypeError):
            problems.append(f"predictor.{path} (missing)")
            continue
        for name in names:
            if not hasattr(obj, name):
                problems.append(f"predictor.{path + '.' if path else ''}{name} (missing)")
    keys = [k for k, _ in predictor.named_parameters()]
    for key in CHECKPOINT_KEYS:
        if not any(k.startswith(key) for k in keys):
            problems.append(f"checkpoint key {key} (missing)")
    return problems


def incompatibilities(predictor: Any = None) -> list[str]:
    """Every sam2 name listed here that the installed sam2 lacks or changed.

    Parameters
    ----------
    predictor : a built ``SAM2VideoPredictor``; its instance attributes
        (:data:`ATTRIBUTES`) and parameter names are checked too.

    Returns
    -------
    list of str
        One entry per problem, e.g. ``"SAM2VideoPredictor._get_image_feature (missing)"``;
        empty when everything is there.
    """
    problems = [p for e in (*CLASSES, *METHODS) if (p := _check_name(e)) is not None]
    problems += _check_state_keys()
    problems += _check_behaviours()
    problems += _check_defaults()
    problems += _check_configs()
    if predictor is not None:
        problems += _check_attributes(predictor)
    return problems


_warned: set[str | None] = set()


def check_sam2_compat(predictor: Any = None) -> str | None:
    """Verify the installed sam2 has every name this package uses.

    Parameters
    ----------
    predictor : a built ``SAM2VideoPredictor`` to check its attributes too.

    Returns
    -------
    str or None
        The installed sam2 version (None when unknown).

    Raises
    ------
    Sam2CompatError
        One line naming every missing or changed name, the installed and the tested
        version, and what to install.

    Notes
    -----
    All names present with a sam2 version other than :data:`TESTED_VERSIONS` logs one
    warning per process and version.
    """
    version = installed_version()
    tested = ", ".join(TESTED_VERSIONS)
    problems = incompatibilities(predictor)
    if problems:
        raise Sam2CompatError(
            f"sam2 {version or '(unknown version)'} lacks what napari-sam2-worms needs: "
            f"{'; '.join(problems)}. It was tested with sam2 {tested} (facebookresearch/sam2 "
            f"{TESTED_COMMIT}): pip install 'sam2=={TESTED_VERSIONS[-1]}'."
        )
    if version not in TESTED_VERSIONS and version not in _warned:
        _warned.add(version)
        log.warning(
            "sam2 %s is installed; napari-sam2-worms was tested with sam2 %s. Every sam2 "
            "name it uses is there, but results and speed are not verified with this version.",
            version or "(unknown version)",
            tested,
        )
    return version
