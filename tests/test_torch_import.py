"""PyTorch models through torch.export and TVM's frontend (batch norm, dropout, pooling, flatten,
concat, softmax): they schedule, build and match the unscheduled TVM build and PyTorch eager,
with merge stages where convolutions share their input."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import ios_tvm
from ios_tvm.core.schedule import Schedule

torch = pytest.importorskip("torch", reason="PyTorch import needs torch (.ci/run installs the CPU build)")


class Branches(torch.nn.Module):
    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.a = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.MaxPool2d(3, 1, 1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(19 * 8 * 8, 10)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x), self.pool(x)], 1)
        return torch.softmax(self.fc(self.drop(torch.flatten(y, 1))), -1)


@pytest.mark.parametrize("keep_params_as_input", [False, True])
def test_torch_export_schedules_and_matches(keep_params_as_input):
    from tvm.relax.frontend.torch import from_exported_program

    torch.manual_seed(0)
    net = Branches().eval()
    for m in net.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        want = net(x).numpy()
    mod = from_exported_program(torch.export.export(net, (x,)), keep_params_as_input=keep_params_as_input)
    args = [x.numpy()]
    if keep_params_as_input:
        mod, params = relax.frontend.detach_params(mod)
        args += [p.numpy() for p in params["main"]]
    graph = ios_tvm.extract_graph(mod, "llvm")
    ios = ios_tvm.optimize(mod, {"kind": "cuda", "arch": "sm_90"}, graph=graph)
    greedy = Schedule.greedy(graph)
    assert greedy.max_streams >= 2

    def run(sched):
        vm = relax.VirtualMachine(ios_tvm.build(mod, "llvm", sched), tvm.cpu())
        out = vm["main"](*[tvm.runtime.tensor(a) for a in args])
        return (out[0] if not hasattr(out, "numpy") else out).numpy()

    seq = run(None)
    np.testing.assert_allclose(seq, want, rtol=1e-4, atol=1e-6)
    for sched in (ios, greedy):
        np.testing.assert_allclose(run(sched), seq, rtol=1e-5, atol=1e-6)


def _basic_conv(cin: int, cout: int, k: int):
    """torchvision's GoogLeNet layer: conv without bias, batch norm, relu."""
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class InceptionFire(torch.nn.Module):
    """An inception block as torchvision's GoogLeNet has it (1x1 | 1x1-3x3 | 1x1-5x5 | pool-1x1,
    batch norm) and a SqueezeNet fire module (squeeze 1x1, expand 1x1 | 3x3, with biases)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU())
        self.b1 = _basic_conv(32, 16, 1)
        self.b3 = nn.Sequential(_basic_conv(32, 16, 1), _basic_conv(16, 24, 3))
        self.b5 = nn.Sequential(_basic_conv(32, 4, 1), _basic_conv(4, 8, 5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), _basic_conv(32, 8, 1))
        self.squeeze = nn.Sequential(nn.Conv2d(56, 8, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(8, 32, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(8, 32, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        x = self.stem(x)
        x = self.squeeze(torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1))
        return self.head(torch.cat([self.e1(x), self.e3(x)], 1))


def test_torch_export_gets_merge_stages(free_merges):
    """Weights bound with ``ios_tvm.models.bind_params``: the fire module's biased expand convs
    (bias through a reshape) and the inception block's first 1x1 convs (each before its batch
    norm, which stays in its own kernel) merge."""
    from tvm.relax.frontend.torch import from_exported_program

    from ios_tvm import models
    from ios_tvm.driver.optimize import SearchConfig

    torch.manual_seed(0)
    net = InceptionFire().eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        want = net(x).numpy()
    mod = from_exported_program(torch.export.export(net, (x,)), keep_params_as_input=True)
    mod, params = relax.frontend.detach_params(mod)
    names = [p.name for p in mod["main"].params[1:]]
    mod = models.bind_params(mod, {n: p.numpy() for n, p in zip(names, params["main"])})
    graph = ios_tvm.extract_graph(mod, "llvm")
    sched = ios_tvm.optimize(mod, "llvm", graph=graph, cost_model=free_merges, search=SearchConfig(strategy="both"))

    merges = graph.merges
    channels = [[merges.units[v].channels for v in fam] for fam in merges.families]
    assert channels == [[16, 16, 4], [32, 32]]
    assert [merges.units[v].bias is not None for fam in merges.families for v in fam] == [False] * 3 + [True] * 2
    assert sorted(map(sorted, sched.merges)) == sorted(map(sorted, merges.families))

    def run(s):
        out = relax.VirtualMachine(ios_tvm.build(mod, "llvm", s), tvm.cpu())["main"](tvm.runtime.tensor(x.numpy()))
        return out[0].numpy()

    seq = run(None)
    np.testing.assert_allclose(seq, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(run(sched), seq, rtol=1e-5, atol=1e-8)
