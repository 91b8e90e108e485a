"""A CPU-side check that code never synchronises with the host (docs/integration.md: on-device behaviour).

On a GPU, reading a tensor's value on the host (`.item()`, `.tolist()`, `bool(t)`, `.cpu()`,
`nonzero()`, boolean-mask indexing, anything whose output shape depends on values) waits for the
device and breaks CUDA-graph capture. `torch.cuda.set_sync_debug_mode("error")` catches that on a
GPU; on CPU-only CI this guard catches the same operations at the two places torch routes them:

* `__torch_function__` (a `TorchFunctionMode`): Python-level tensor methods that hand values to
  the host: `item`, `tolist`, `numpy`, `cpu`, `__bool__`, `__int__`, `__float__`, `__index__`,
  `__array__`;
* `__torch_dispatch__` (a `TorchDispatchMode`): the ATen ops behind them and the value-dependent
  shape ops: `_local_scalar_dense` (every scalar read), `nonzero`, `masked_select`, `unique`
  variants, and `index` with a boolean mask.

Usage: `with forbid_host_sync(): fn(...)` raises `HostSyncError` naming the operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_FORBIDDEN_METHODS = {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__",
                      "__array__", "nonzero", "masked_select", "unique", "unique_consecutive", "argwhere"}
_FORBIDDEN_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique", "argwhere",
                  "repeat_interleave")


class HostSyncError(AssertionError):
    """Raised when guarded code reads tensor values on the host or makes a value-dependent shape."""


class _FunctionGuard(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in _FORBIDDEN_METHODS:
            raise HostSyncError(f"host synchronisation: Tensor.{name} called")
        return func(*args, **(kwargs or {}))


class _DispatchGuard(TorchDispatchMode):
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if any(name == op or name.startswith(op + ".") or name == op.lstrip("_") for op in _FORBIDDEN_OPS):
            raise HostSyncError(f"host synchronisation or value-dependent shape: aten.{name}")
        if name == "index":
            indices = args[1] if len(args) > 1 else (kwargs or {}).get("indices", [])
            if any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in indices):
                raise HostSyncError("value-dependent shape: boolean-mask indexing (aten.index with a bool mask)")
        return func(*args, **(kwargs or {}))


@contextmanager
def forbid_host_sync() -> Iterator[None]:
    """Within the block, any host read of tensor values or value-dependent shape raises HostSyncError."""
    with _FunctionGuard(), _DispatchGuard():
        yield
