"""AdamW written out in a few tensor operations.

`torch.optim` imports PyTorch's compiler the first time any optimiser is built, which costs about two
seconds: longer than a whole epoch of some small models. This class does the same arithmetic as
`torch.optim.AdamW` (decoupled weight decay, bias-corrected moments) without that import.

    >>> opt = AdamW([{"params": model.parameters(), "weight_decay": 5e-4}], lr=1e-3)
    >>> loss.backward(); opt.step(); opt.zero_grad()

`state_dict()` has the layout of `torch.optim`'s (parameters numbered across groups; `step`,
`exp_avg`, `exp_avg_sq` per parameter), so optimiser states saved by either load into the other.
"""

from __future__ import annotations

import torch


class AdamW:
    def __init__(self, groups, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if not isinstance(groups, list) or not groups or not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups = []
        for group in groups:
            group = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": 0.0, **group}
            group["params"] = list(group["params"])
            self.param_groups.append(group)
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in params:
                if p not in self.state:
                    self.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                                     "exp_avg_sq": torch.zeros_like(p)}
            states = [self.state[p] for p in params]
            grads = [p.grad for p in params]
            m = [s["exp_avg"] for s in states]
            v = [s["exp_avg_sq"] for s in states]
            for s in states:
                s["step"] += 1
            step = float(states[0]["step"])  # parameters of one group always step together
            if wd:
                torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_lerp_(m, grads, 1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
            bias1, bias2 = 1 - beta1 ** step, 1 - beta2 ** step
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, bias2 ** 0.5)
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(params, m, denom, -lr / bias1)

    def state_dict(self) -> dict:
        index = {p: i for i, p in enumerate(self._params())}
        return {"state": {index[p]: dict(s) for p, s in self.state.items()},
                "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]}

    def load_state_dict(self, sd: dict) -> None:
        params = self._params()
        state = {}
        for i, s in sd["state"].items():
            i = int(i)
            if not 0 <= i < len(params):
                raise ValueError(f"optimiser state for parameter {i}, the model has {len(params)}")
            p = params[i]
            for key in ("exp_avg", "exp_avg_sq"):
                if s[key].shape != p.shape:
                    raise ValueError(f"optimiser state {i}.{key} has shape {tuple(s[key].shape)}, "
                                     f"the parameter {tuple(p.shape)}")
            state[p] = {"step": torch.as_tensor(s["step"], dtype=torch.float32).clone(),
                        "exp_avg": s["exp_avg"].to(p.device, p.dtype, copy=True),
                        "exp_avg_sq": s["exp_avg_sq"].to(p.device, p.dtype, copy=True)}
        self.state = state
