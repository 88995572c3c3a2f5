"""Demo: train a small S4 model to recall its input from `delay` steps ago, then run it as a
streaming RNN and check that the recurrence reproduces the convolution.

Task: u_t ~ N(0, 1) (white noise), target y_t = u_{t - delay}; the model must hold `delay` past
values in its state. Predicting zero gives MSE 1.

    python -m liquid_s4.demo [--layer S4|S4D|LSSL] [--length 256] [--delay 32] [--steps 300]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn

from . import LSSL, S4, S4D, param_groups

LAYERS = {"S4": S4, "S4D": S4D, "LSSL": LSSL}


def delay_batch(
    batch: int, length: int, delay: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    u = torch.randn(batch, length, 1, generator=generator)
    return u, torch.nn.functional.pad(u[:, : length - delay], (0, 0, delay, 0))  # (B, L, 1) each


class TinyModel(nn.Module):
    def __init__(self, layer_cls, d_model: int = 32, n_layers: int = 2, d_state: int = 32):
        super().__init__()
        self.encoder = nn.Linear(1, d_model)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.layers = nn.ModuleList(
            layer_cls(d_model, d_state, dt_min=1e-3, dt_max=1e-1) for _ in range(n_layers)
        )
        self.decoder = nn.Linear(d_model, 1)

    def forward(self, u):  # (B, L, 1) -> (B, L, 1)
        x = self.encoder(u)
        for norm, layer in zip(self.norms, self.layers):
            x = x + layer(norm(x))[0]
        return self.decoder(x)

    @torch.no_grad()
    def stream(self, u):  # the same model, one step at a time
        states, out = [layer.default_state(u.shape[0]) for layer in self.layers], []
        for t in range(u.shape[1]):
            x = self.encoder(u[:, t])
            for i, (norm, layer) in enumerate(zip(self.norms, self.layers)):
                y, states[i] = layer.step(norm(x), states[i])
                x = x + y
            out.append(self.decoder(x))
        return torch.stack(out, 1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layer", choices=sorted(LAYERS), default="S4")
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--delay", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    model = TinyModel(LAYERS[args.layer])
    opt = torch.optim.AdamW(param_groups(model, lr=args.lr, weight_decay=0.01))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=args.steps
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.layer}: recall the input from {args.delay} steps ago, L={args.length}, {n_params} parameters"
    )
    start = time.time()
    for step in range(1, args.steps + 1):
        u, y = delay_batch(args.batch, args.length, args.delay, gen)
        loss = (model(u) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == args.steps:
            print(f"step {step:4d}  train mse {loss.item():.4f}  ({time.time() - start:.1f} s)")

    model.eval()
    u, y = delay_batch(256, args.length, args.delay, gen)
    with torch.no_grad():
        pred = model(u)
    t0 = time.time()
    streamed = model.stream(u[:64])
    rate = 64 * args.length / (time.time() - t0)
    print(
        f"test mse {(pred - y).square().mean().item():.4f}  (predicting zero: {y.square().mean().item():.4f})"
    )
    print(
        f"streaming (step) vs convolution max |diff| {(streamed - pred[:64]).abs().max().item():.2e}, "
        f"{rate:,.0f} sample-steps/s"
    )


if __name__ == "__main__":
    main()
