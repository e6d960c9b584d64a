"""The kernel-set switch behind `make test-portable` must really change float32 numerics here.

`make test-portable` re-runs strict nbval with ATen's generic kernels (and MKL/oneDNN pinned). That
only catches CPU dependence if those kernels compute float32 results differently from the native
ones on the machine that runs it; this test proves it, by computing the same float32 values in two
fresh processes, one under each kernel set, and comparing their bits. It also checks what the
portable notebooks rely on: in float64 the same computation agrees to ~1e-15 between kernel sets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

PORTABLE = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41",
            "DNNL_MAX_CPU_ISA": "SSE41"}

_PROGRAM = r"""
import json, torch
torch.manual_seed(0)
out = {"capability": torch.backends.cpu.get_cpu_capability()}
for name, dtype in (("f32", torch.float32), ("f64", torch.float64)):
    x = torch.randn(4096, dtype=dtype)
    a, b = torch.randn(64, 256, dtype=dtype), torch.randn(256, 64, dtype=dtype)
    values = torch.cat([torch.exp(x), torch.softmax(x, 0), torch.log_softmax(x, 0), torch.tanh(x),
                        (a @ b).flatten(), torch.nn.functional.silu(x)])
    out[name] = values.tolist()
print(json.dumps(out))
"""


def _run(env_overrides: dict[str, str], drop: tuple[str, ...]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_overrides)
    done = subprocess.run([sys.executable, "-c", _PROGRAM], env=env, capture_output=True, text=True, check=True,
                          timeout=120)
    return json.loads(done.stdout)


def test_generic_kernels_change_float32_bits_but_not_float64_values():
    native = _run({}, drop=tuple(PORTABLE))
    generic = _run(PORTABLE, drop=())
    assert generic["capability"] == "DEFAULT", generic["capability"]
    assert native["capability"] != "DEFAULT", (
        "this machine's native kernel set is already the generic one, so `make test-portable` "
        "compares a kernel set with itself and proves nothing here")
    f32_diff = [abs(p - q) for p, q in zip(native["f32"], generic["f32"], strict=True)]
    assert sum(d > 0 for d in f32_diff) > 0, "the generic kernels gave bit-identical float32 results"
    f64_diff = [abs(p - q) / (1.0 + abs(p)) for p, q in zip(native["f64"], generic["f64"], strict=True)]
    assert max(f64_diff) < 1e-12, max(f64_diff)
