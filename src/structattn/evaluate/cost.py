"""Cost accounting: model forward/backward passes and wall time per explained point.

A "pass" is one sample through the model: a batched forward of 64 masked copies counts 64
forwards. Forwards are counted with a forward hook; backwards with a tensor hook on the
output, which fires only when a gradient actually flows back through the model.
"""

from __future__ import annotations

import time

import torch
from torch import nn


class PassCounter:
    """Context manager counting sample forwards and backwards through `model`.

    Example:
        >>> m = nn.Linear(3, 1)
        >>> with PassCounter(m) as c:
        ...     m(torch.zeros(5, 3)).sum().backward()
        >>> c.forwards, c.backwards
        (5, 5)
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.forwards = 0
        self.backwards = 0
        self._handle = None

    def _hook(self, module, inputs, output):
        y = output[0] if isinstance(output, tuple) else output
        n = int(y.shape[0])
        self.forwards += n
        if y.requires_grad:
            def count(grad, n=n):
                self.backwards += n
            y.register_hook(count)

    def __enter__(self) -> "PassCounter":
        self._handle = self.model.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


def measure_cost(explainer, patches: torch.Tensor, *, target: int | None) -> tuple[torch.Tensor, dict]:
    """Run ``explainer.attribute`` once, counting passes and wall time.

    Returns:
        (maps, cost) with cost ``{"forwards_per_point", "backwards_per_point",
        "seconds_per_point", "points_per_second", "points"}``.
    """
    n = len(patches)
    if n == 0:
        raise ValueError("patches: expected at least one point to explain, got 0")
    with PassCounter(explainer.model) as c:
        t0 = time.perf_counter()
        maps = explainer.attribute(patches, target=target)
        dt = time.perf_counter() - t0
    return maps, {
        "forwards_per_point": c.forwards / n,
        "backwards_per_point": c.backwards / n,
        "seconds_per_point": dt / n,
        "points_per_second": n / dt if dt > 0 else float("inf"),
        "points": n,
    }
