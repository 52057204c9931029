"""A PyTorch model through torch.export and TVM's frontend (batch norm, dropout, pooling, flatten,
concat, softmax): it schedules, builds and matches the unscheduled TVM build and PyTorch eager."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import ios_tvm
from ios_tvm.schedule import Schedule

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
