"""The model zoo: shapes of the paper's networks, knobs, deterministic weights."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from ios_tvm import models
from ios_tvm.models.randwire import ws_dag


def _param_shapes(mod):
    return {p.name: tuple(int(d) for d in p.ty.shape) for p in mod["main"].params}


def _out_shape(mod):
    return tuple(int(d) for d in mod["main"].body.body.ty.shape)


@pytest.mark.parametrize("name", models.names())
@pytest.mark.parametrize("small", [True, False])
def test_zoo_models_are_well_formed(name, small):
    mod = models.get(name, small=small)
    assert relax.analysis.check_well_formed(mod)
    if name in models.TRANSFORMERS:  # hidden states in, hidden states out
        assert _out_shape(mod) == _param_shapes(mod)["data"]
    else:
        assert _out_shape(mod) == (1, 1000)
    assert int(mod["main"].attrs["num_input"]) == 1
    assert mod["main"].params[0].name == "data"


@pytest.mark.parametrize("name, size", [("inception_v3", 299), ("nasnet_a_large", 331), ("squeezenet", 224),
                                        ("googlenet", 224), ("randwire", 224)])
def test_paper_input_sizes(name, size):
    assert _param_shapes(models.get(name))["data"] == (1, 3, size, size)


def test_nasnet_is_6_at_4032():
    mod = models.get("nasnet_a_large")
    fc = [s for n, s in _param_shapes(mod).items() if n.endswith("fc_w")]
    assert fc == [(4032, 1000)]
    # 3 stacks x 6 normal cells + 2 reduction + 2 stem cells; each cell concatenates its states
    fn = mod["main"]
    concats = [b for b in fn.body.blocks[0].bindings
               if isinstance(b.value, relax.Call) and b.value.op.name == "relax.concat"]
    assert len(concats) >= 22


def test_inception_v3_feature_map_sizes():
    mod = models.get("inception_v3")
    shapes = {tuple(int(d) for d in b.var.ty.shape) for b in mod["main"].body.blocks[0].bindings
              if isinstance(b.var.ty, relax.TensorType) and b.var.ty.ndim == 4}
    for s in [(1, 288, 35, 35), (1, 768, 17, 17), (1, 2048, 8, 8)]:
        assert s in shapes


def test_batch_size_and_knobs():
    mod = models.get("squeezenet", batch_size=4, image_size=96, width=0.5)
    assert _param_shapes(mod)["data"] == (4, 3, 96, 96)
    assert _out_shape(mod) == (4, 1000)
    small = models.get("randwire", num_nodes=6, num_stages=1, channels=4, image_size=32)
    big = models.get("randwire", num_nodes=10, num_stages=1, channels=4, image_size=32)
    assert len(small["main"].params) < len(big["main"].params)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        models.get("resnet")
    with pytest.raises(ValueError, match="batch_size"):
        models.get("squeezenet", batch_size=0)
    with pytest.raises(ValueError, match="image_size"):
        models.get("inception_v3", image_size=64)
    with pytest.raises(ValueError, match="multiple of 24"):
        models.get("nasnet_a_large", penultimate_filters=100)


def test_random_params_are_deterministic():
    mod = models.get("googlenet", small=True)
    a, b, c = models.random_params(mod, 0), models.random_params(mod, 0), models.random_params(mod, 1)
    assert a.keys() == b.keys() == set(_param_shapes(mod)) - {"data"}
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    assert all(a[k].shape == _param_shapes(mod)[k] and a[k].dtype == np.float32 for k in a)


def test_bind_params_makes_constants():
    mod = models.get("squeezenet", small=True)
    bound = models.bind_params(mod, models.random_params(mod))
    assert [p.name for p in bound["main"].params] == ["data"]


def test_randwire_graph_is_a_fixed_watts_strogatz_dag():
    edges = ws_dag(32, 4, 0.75, seed=0)
    assert edges == ws_dag(32, 4, 0.75, seed=0)
    assert len(edges) == 32 * 4 // 2  # WS keeps n*k/2 edges
    assert all(u < v for u, v in edges)


def test_small_model_runs_and_matches_numpy():
    """An independent check of the builder's layers: a tiny conv net against numpy."""
    nb = models._builder.NetBuilder("tiny", (1, 2, 5, 5))
    with nb.scope() as x:
        y = nb.conv(x, 3, 3)            # conv + bias + relu, same padding
        z = nb.avg_pool(y, 3, 1, 1)     # count_include_pad=False
        nb.output(nb.concat([y, z]))
    mod = nb.module()
    params = models.random_params(mod, 3)
    data = models.random_input(mod, 4)
    ex = tvm.compile(models.bind_params(mod, params), "llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(data)).numpy()

    w, b = params["p1_w"], params["p2_b"]
    xp = np.pad(data, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((1, 3, 5, 5), np.float64)
    for i in range(5):
        for j in range(5):
            ref[0, :, i, j] = np.tensordot(w, xp[0, :, i:i + 3, j:j + 3], axes=([1, 2, 3], [0, 1, 2]))
    ref = np.maximum(ref + b.reshape(1, 3, 1, 1), 0)
    pool = np.zeros_like(ref)
    for i in range(5):
        for j in range(5):
            win = ref[:, :, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
            pool[:, :, i, j] = win.mean(axis=(2, 3))
    np.testing.assert_allclose(got, np.concatenate([ref, pool], axis=1), rtol=1e-5, atol=1e-5)
