"""Train the demo model from scratch on drawn shapes, on a CPU, within a time budget.

Stages (fixed seed): 1. the VAE (64x64 RGB <-> 8x8x4 latent); 2. encode a pool of captioned
pictures once with the frozen encoder; 3. the UNet and the text encoder together (epsilon
prediction, min-SNR-5 loss weights, 10% empty captions for classifier-free guidance,
cosine learning rate); 4. save the config and fp16 weights; 5. grade prompt following.
Each stage ends at its step count or its share of ``--minutes``, whichever comes first; the
learning rate follows whichever of the two is further along, so a slow machine still anneals.

usage: python -m easel.server.demo.train [--out DIR] [--minutes N] [--seed S] ...
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Clock:
    """Progress of a stage bounded by steps and seconds, with a learning-rate factor and an ETA."""

    def __init__(self, steps: int, seconds: float, warmup: int = 50, floor: float = 0.02):
        self.steps, self.seconds, self.warmup, self.floor = steps, max(seconds, 1.0), warmup, floor
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def progress(self, step: int) -> float:
        return min(1.0, max(step / self.steps, self.elapsed() / self.seconds))

    def lr_factor(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup)
        return warm * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * self.progress(step))))

    def eta(self, step: int) -> float:
        p = self.progress(step)
        return self.elapsed() * (1 - p) / p if p > 0 else float("nan")


def _log(stage: str, step: int, clock: Clock, loss: float, extra: str = "") -> None:
    print(f"[{stage}] step {step:5d}  loss {loss:.4f}  {clock.elapsed():6.0f}s  "
          f"{100 * clock.progress(step):3.0f}%  eta {clock.eta(step):4.0f}s {extra}", flush=True)


def _to_tensor(x: np.ndarray):
    import torch

    return torch.from_numpy(x).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def foreground_weight(x, weight: float):
    """Per-pixel loss weight: ``1 + weight`` where a pixel differs from its picture's border median.

    Shapes cover a small share of each picture; without this the VAE learns the background and
    outlines long before it learns the shapes' colours.
    """
    import torch

    border = torch.cat([x[:, :, :2].flatten(2), x[:, :, -2:].flatten(2), x[:, :, :, :2].flatten(2),
                        x[:, :, :, -2:].flatten(2)], dim=2)
    bg = border.median(dim=2).values[:, :, None, None]
    fg = ((x - bg).abs().sum(dim=1, keepdim=True) > 0.15).float()
    return 1.0 + weight * fg


def train_vae(vae, rng: np.random.Generator, args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    """Stage 1: reconstruction (L1 + MSE, shape pixels weighted up), tiny KL; shapes plus clutter scenes."""
    import torch

    from . import shapes

    with torch.no_grad():  # start with a near-deterministic posterior (std ~0.007) so colour survives sampling
        conv = vae.encoder.conv_out
        half = conv.out_channels // 2
        conv.weight[half:].zero_()
        conv.bias[half:].fill_(-10.0)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    clock, smooth, step = Clock(args.vae_steps, seconds), None, 0
    vae.train()
    while clock.progress(step) < 1.0:
        for g in opt.param_groups:
            g["lr"] = args.vae_lr * clock.lr_factor(step)
        x = _to_tensor(shapes.batch(rng, args.vae_batch, clutter_frac=args.vae_clutter)[0])
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        err = (rec - x).abs() + (rec - x) ** 2
        w = foreground_weight(x, args.fg_weight)
        loss = (err * w).sum() / (w.sum() * 3) + 1e-6 * post.kl().mean()
        if args.vae_edge:  # match image gradients too: sharper edges and corners
            for dim in (2, 3):
                loss = loss + args.vae_edge * (rec.diff(dim=dim) - x.diff(dim=dim)).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        if step % args.log_every == 0:
            _log("vae", step, clock, smooth)
        step += 1
    _log("vae", step, clock, smooth or 0.0, "done")
    return {"vae_steps": step, "vae_seconds": round(clock.elapsed(), 1), "vae_loss": round(smooth or 0.0, 4)}


def encode_pool(vae, tok, rng: np.random.Generator, n: int) -> dict[str, Any]:
    """Stage 2: draw ``n`` captioned pictures, encode them once, fit the latent scale and preview map."""
    import torch

    from . import shapes

    t0 = time.perf_counter()
    vae.eval()
    means, stds, pooled, caps = [], [], [], []
    with torch.no_grad():
        for start in range(0, n, 256):
            imgs, c = shapes.batch(rng, min(256, n - start))
            x = _to_tensor(imgs)
            dist = vae.encode(x).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
            pooled.append(torch.nn.functional.avg_pool2d(x, 8))
            caps += c
    mean, std = torch.cat(means), torch.cat(stds)
    scale = float(1.0 / mean.std())
    # Least-squares latent(scaled) -> RGB[0,1] map for previews, per 8x8 pixel cell.
    lat = (mean * scale).permute(0, 2, 3, 1).reshape(-1, 4)
    rgb = (torch.cat(pooled) * 0.5 + 0.5).permute(0, 2, 3, 1).reshape(-1, 3)
    sol = torch.linalg.lstsq(torch.cat([lat, torch.ones(len(lat), 1)], 1), rgb).solution
    ids = tok(caps, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    print(f"[encode] {n} pictures in {time.perf_counter() - t0:.0f}s, scaling factor {scale:.4f}", flush=True)
    return {"mean": mean * scale, "std": std * scale, "ids": ids, "scale": scale,
            "preview": {"matrix": sol[:4].tolist(), "bias": sol[4].tolist()}, "seconds": time.perf_counter() - t0}


def train_unet(unet, te, tok, pool: dict[str, Any], rng: np.random.Generator, args: argparse.Namespace,
               seconds: float) -> dict[str, Any]:
    """Stage 3: UNet + text encoder, epsilon prediction with min-SNR-5 weights and caption dropout."""
    import torch
    from diffusers import DDPMScheduler

    from .config import NOISE_SCHEDULE

    sched = DDPMScheduler(**NOISE_SCHEDULE)
    ab = sched.alphas_cumprod
    snr = ab / (1 - ab)
    weight_t = torch.clamp(snr, max=5.0) / snr
    uncond = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    clock, smooth, step, n = Clock(args.unet_steps, seconds, warmup=100), None, 0, len(pool["ids"])
    unet.train()
    te.train()
    while clock.progress(step) < 1.0:
        for g in opt.param_groups:
            g["lr"] = args.lr * clock.lr_factor(step)
        idx = torch.from_numpy(rng.integers(0, n, args.batch))
        lat = pool["mean"][idx] + pool["std"][idx] * torch.randn_like(pool["mean"][idx])
        ids = pool["ids"][idx].clone()
        drop = torch.from_numpy(rng.random(args.batch) < args.cond_drop)
        ids[drop] = uncond
        emb = te(ids)[0]
        noise = torch.randn_like(lat)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch,))
        pred = unet(sched.add_noise(lat, noise, t), t, encoder_hidden_states=emb).sample
        loss = ((pred - noise) ** 2).mean(dim=(1, 2, 3)).mul(weight_t[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        if step % args.log_every == 0:
            _log("unet", step, clock, smooth, f"lr {opt.param_groups[0]['lr']:.2e}")
        step += 1
    _log("unet", step, clock, smooth or 0.0, "done")
    return {"unet_steps": step, "unet_seconds": round(clock.elapsed(), 1), "unet_loss": round(smooth or 0.0, 4)}


def pick_threads(requested: int) -> int:
    """``requested``, or for 0: 2 threads (1 when other processes already keep the CPUs busy).

    Two threads that must meet at every small op slow down ~10x on oversubscribed cores.
    """
    if requested > 0:
        return requested
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(2, cpus, int(cpus - load + 0.5)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from ...cli import Parser  # a bad flag: one line naming it

    p = Parser(prog="easel demo-model train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="easel-demo-model", help="folder for easel-demo.json/.safetensors")
    p.add_argument("--minutes", type=float, default=18.0, help="time budget for the whole run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: 2, or 1 on a busy machine)")
    p.add_argument("--vae-steps", type=int, default=1000)
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--fg-weight", type=float, default=8.0, help="extra VAE loss weight on shape pixels")
    p.add_argument("--vae-clutter", type=float, default=0.1, help="share of caption-less clutter scenes")
    p.add_argument("--vae-edge", type=float, default=0.0, help="VAE loss weight on image gradients")
    p.add_argument("--vae-share", type=float, default=0.2, help="share of the budget for the VAE")
    p.add_argument("--pool", type=int, default=6000, help="captioned pictures encoded for stage 3")
    p.add_argument("--unet-steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--cond-drop", type=float, default=0.1, help="share of empty captions (for CFG)")
    p.add_argument("--eval-seeds", type=int, default=2, help="seeds per prompt in the final grading (0: skip)")
    p.add_argument("--log-every", type=int, default=50)
    args = p.parse_args(argv)
    from ...cli.library import cannot_write

    bad = next((f"--{k.replace('_', '-')} must be above 0 (got {v})" for k, v in vars(args).items()
                if k in ("minutes", "vae_steps", "vae_batch", "pool", "unet_steps", "batch", "log_every") and v <= 0),
               None) or (f"cannot write --out {args.out}: {cannot_write(Path(args.out))}"
                         if cannot_write(Path(args.out)) else None)
    if bad:
        p.error(bad)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the whole training; returns a process exit code."""
    args = parse_args(argv)
    t_start = time.perf_counter()
    budget = args.minutes * 60.0
    import diffusers
    import torch
    import transformers

    from . import config as demo_config
    from . import evaluate, model

    diffusers.utils.logging.set_verbosity_error()
    args.threads = pick_threads(args.threads)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    cfg = demo_config.default_config()
    comps = demo_config.build_components(cfg)
    vae, unet, te, tok = comps["vae"], comps["unet"], comps["text_encoder"], comps["tokenizer"]
    sizes = {k: sum(p.numel() for p in comps[k].parameters()) for k in demo_config.COMPONENTS}
    print(f"[setup] params {sizes}, budget {budget:.0f}s, {args.threads} threads, out {args.out}", flush=True)
    eval_reserve = 25.0 if args.eval_seeds else 5.0

    info: dict[str, Any] = {"seed": args.seed, "minutes": args.minutes, "threads": args.threads, "params": sizes}
    info.update(train_vae(vae, rng, args, budget * args.vae_share - (time.perf_counter() - t_start)))
    vae.eval().requires_grad_(False)
    pool = encode_pool(vae, tok, rng, args.pool)
    cfg["vae"]["scaling_factor"] = pool["scale"]
    vae.register_to_config(scaling_factor=pool["scale"])
    cfg["preview"] = pool["preview"]
    info["encode_seconds"] = round(pool["seconds"], 1)
    remaining = budget - (time.perf_counter() - t_start) - eval_reserve
    info.update(train_unet(unet, te, tok, pool, rng, args, remaining))
    unet.eval().requires_grad_(False)
    te.eval().requires_grad_(False)

    info["train_seconds"] = round(time.perf_counter() - t_start, 1)
    info["versions"] = {"torch": torch.__version__, "diffusers": diffusers.__version__,
                        "transformers": transformers.__version__, "python": platform.python_version()}
    out = Path(args.out)
    if args.eval_seeds:
        pipe = model.assemble(comps)
        results, acc = evaluate.grade(pipe, list(range(args.eval_seeds)), model.DEFAULT_STEPS, model.DEFAULT_GUIDANCE)
        info["eval"] = {"seeds": args.eval_seeds, **{k: round(v, 3) for k, v in acc.items()}}
        out.mkdir(parents=True, exist_ok=True)
        evaluate.grid([r.image for r in results], len(evaluate.EVAL_COLOURS)).save(out / "samples.png")
        print(f"[eval] colour {acc['colour']:.0%}  shape {acc['shape']:.0%}  both {acc['both']:.0%}", flush=True)
    info["total_seconds"] = round(time.perf_counter() - t_start, 1)
    info["cpu_seconds"] = round(time.process_time(), 1)
    cfg["training"] = info
    wpath, _ = demo_config.save_weights(out, cfg, comps)
    print(f"[done] {info['total_seconds']:.0f}s; wrote {wpath} ({wpath.stat().st_size / 1e6:.1f} MB)", flush=True)
    print(json.dumps(info), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
