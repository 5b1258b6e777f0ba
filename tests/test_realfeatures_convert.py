"""How `gprune.realfeatures` names the ONNX tensors, on small hand-built graphs (needs only ``onnx``).

The real file's linear weights are unnamed and listed key, value, query; these graphs list them in a
shuffled order too, so a mapping by position fails here while the mapping by bias passes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="needs gprune[realfeatures] (onnx)")
from onnx import helper, numpy_helper  # noqa: E402

from gprune import realfeatures  # noqa: E402

D = 4
LINEARS = ("query", "key", "value")


def build_graph(path: Path, *, drop_bias: str | None = None) -> dict[str, np.ndarray]:
    """x -> (x @ W_m + b_m for m in LINEARS), plus the two position-embedding nodes; returns W by module."""
    rng = np.random.default_rng(0)
    inits, nodes, weights = [], [], {}
    for i, name in enumerate(reversed(LINEARS)):  # file order: value, key, query
        w = rng.standard_normal((D, D)).astype(np.float32)  # (in, out), as the ONNX MatMul keeps it
        module = f"backbone.encoder.layer.0.attention.attention.{name}"
        weights[name] = w
        inits.append(numpy_helper.from_array(w, f"onnx::MatMul_{100 + i}"))
        nodes.append(
            helper.make_node("MatMul", ["x", f"onnx::MatMul_{100 + i}"], [f"{name}_mm"], name=f"/{name}/MatMul")
        )
        if name != drop_bias:
            inits.append(numpy_helper.from_array(rng.standard_normal(D).astype(np.float32), f"{module}.bias"))
            nodes.append(
                helper.make_node("Add", [f"{module}.bias", f"{name}_mm"], [f"{name}_out"], name=f"/{name}/Add")
            )
    inits.append(numpy_helper.from_array(np.full((1, 1, D), 7.0, np.float32), "onnx::Concat_1"))
    inits.append(numpy_helper.from_array(np.ones((1, 9, D), np.float32), "onnx::Reshape_2"))
    inits.append(numpy_helper.from_array(np.array([1, 3, 3, D], np.int64), "shape"))
    nodes.append(
        helper.make_node("Reshape", ["onnx::Reshape_2", "shape"], ["pos"], name="/backbone/embeddings/Reshape_1")
    )
    nodes.append(
        helper.make_node("Concat", ["onnx::Concat_1", "pos"], ["all_pos"], axis=1, name="/backbone/embeddings/Concat_6")
    )
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, D])
    out = helper.make_tensor_value_info("all_pos", onnx.TensorProto.FLOAT, None)
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [out], initializer=inits)), str(path))
    return weights


def test_linear_weights_are_named_by_their_bias_and_transposed(tmp_path: Path) -> None:
    expected = build_graph(tmp_path / "g.onnx")
    got = realfeatures.onnx_backbone_weights(tmp_path / "g.onnx")
    for name in LINEARS:
        np.testing.assert_array_equal(got[f"encoder.layer.0.attention.attention.{name}.weight"], expected[name].T)
    pos = got["embeddings.position_embeddings"]
    assert pos.shape == (1, 10, D) and (pos[0, 0] == 7.0).all() and (pos[0, 1:] == 1.0).all()
    assert realfeatures._model_key("encoder.layer.0.attention.attention.query.weight") == (
        "encoder.layer.0.attention.q_proj.weight"
    )


def test_a_weight_without_its_bias_is_an_error(tmp_path: Path) -> None:
    build_graph(tmp_path / "g.onnx", drop_bias="key")
    with pytest.raises(ValueError, match=r"/key/MatMul.*one named bias"):
        realfeatures.onnx_backbone_weights(tmp_path / "g.onnx")
