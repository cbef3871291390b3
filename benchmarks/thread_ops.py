"""Which operations give a different answer at 1 and at 2 torch threads? One real training batch of the fine-tuned
EfficientNet-Lite0 triplet cell (Omniglot small1, 65 px, the harness's own backbone, loss, sampler and input pipeline),
in fp32 and in bf16 autocast + channels_last (what `precision = "auto"` runs on a CPU with fast bf16):

1. the whole step: embeddings, loss and every gradient at 1 vs 2 threads;
2. each leaf module alone, fed the same input and the same output gradient at both thread counts (so a difference
   is that module's own kernel, not one carried in from upstream): forward output, input gradient, weight gradients.

    .venv/bin/python benchmarks/thread_ops.py --omniglot data/omniglot

Differences are max |a − b| / max |a| (0 = bit-identical). Everything goes to results/benchmarks/thread_ops.json
(--out), which benchmarks/tables.py renders.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json

import numpy as np
import record
import tables
import torch

THREADS = (1, 2)


def rel(a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
    if a is None or b is None:
        return None
    a, b = a.detach().float(), b.detach().float()
    scale = a.abs().max().item()
    return float((a - b).abs().max().item() / scale) if scale > 0 else float((a - b).abs().max().item())


def build(root: str, image_size: int):
    """The fine-tuned Lite0 triplet cell's backbone, loss and one training batch, as bench.run.cell builds them."""
    from bench.builtins import load_builtins
    from bench.data.omniglot import omniglot
    from bench.data.preprocess import fit_to_spec, normalize
    from bench.plugins import BACKBONES, LOSSES
    from bench.run.sampling import BatchSampler

    load_builtins()
    torch.manual_seed(0)
    backbone = BACKBONES.get("efficientnet_lite0_imagenet").factory(image_size=image_size)
    loss_fn = LOSSES.get("triplet").factory(backbone.embed_dim)
    data = omniglot(root, "images_background_small1", "")
    images, _ = fit_to_spec(data.images, backbone.input_spec)
    sampler = BatchSampler(loss_fn.batch, data.labels, 32, 0, 4)
    idx = torch.from_numpy(sampler.draw(32))  # one training batch, as train.py draws it
    return backbone, loss_fn, normalize(images[idx], backbone.input_spec), torch.from_numpy(data.labels)[idx]


def autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def fp32_norms(model: torch.nn.Module) -> None:
    """Pin BatchNorm's code path under bf16 autocast: its input in fp32 and contiguous (the kernel that fp32 runs
    identically at any thread count), the next convolution casting back to bf16."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.register_forward_pre_hook(lambda m, args: (args[0].float().contiguous(), *args[1:]))


def whole_step(backbone, loss_fn, x, y, threads: int, bf16: bool, pin_norms: bool = False) -> dict:
    torch.set_num_threads(threads)
    model = copy.deepcopy(backbone).train()
    if pin_norms:
        fp32_norms(model)
    if bf16:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(bf16):
        emb = model(x)
        loss = loss_fn(emb.float(), y)
    loss.backward()
    return {
        "embeddings": emb.detach().float(),
        "loss": loss.detach(),
        "flat": torch.cat([p.grad.double().flatten() for p in model.parameters() if p.grad is not None]),
        "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None},
    }


def leaf_inputs(backbone, x, bf16: bool) -> list[tuple[str, torch.nn.Module, torch.Tensor]]:
    """Every leaf module, and every module with parameters of its own (timm's BatchNormAct2d holds its activation),
    with the input it saw in one forward pass."""
    seen: list[tuple[str, torch.nn.Module, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda m, inp, out, name=name: seen.append((name, m, inp[0].detach().clone())))
        for name, m in backbone.named_modules()
        if not list(m.children()) or list(m.parameters(recurse=False))
    ]
    model = copy.deepcopy(backbone)  # hooks survive the copy; BatchNorm's running stats stay untouched in `backbone`
    for h in hooks:
        h.remove()
    with torch.no_grad(), autocast(bf16):
        model.train()(x.contiguous(memory_format=torch.channels_last) if bf16 else x)
    names = {id(m): n for n, m in model.named_modules()}
    return [(names[id(m)], m, inp) for _, m, inp in seen]


def module_alone(module, inp: torch.Tensor, threads: int, bf16: bool, seed: int) -> dict:
    torch.set_num_threads(threads)
    m = copy.deepcopy(module).train()
    for sub in m.modules():  # an in-place activation would overwrite the input the other thread count reuses
        if getattr(sub, "inplace", False):
            sub.inplace = False
    if bf16 and inp.dim() == 4:
        m.to(memory_format=torch.channels_last)
    x = inp.clone().requires_grad_(inp.is_floating_point())
    with autocast(bf16):
        out = m(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32).to(out.dtype)
    params = [p for p in m.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out, ([x] if x.requires_grad else []) + params, g, allow_unused=True)
    return {"out": out.detach(), "grad_in": grads[0] if x.requires_grad else None, "grad_params": list(grads[1 if x.requires_grad else 0 :])}


def describe(module: torch.nn.Module) -> str:
    kind = type(module).__name__
    if isinstance(module, torch.nn.Conv2d):
        depthwise = module.groups > 1 and module.groups == module.in_channels
        return f"{kind} {'depthwise ' if depthwise else ''}{module.kernel_size[0]}x{module.kernel_size[1]} stride {module.stride[0]}"
    return kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--omniglot", required=True, help="folder with the Omniglot small-set zips")
    parser.add_argument("--image-size", type=int, default=65)
    record.add_out_argument(parser, "thread_ops")
    args = parser.parse_args()
    backbone, loss_fn, x, y = build(args.omniglot, args.image_size)
    raw = {"image_size": args.image_size, "batch": list(x.shape), "threads": list(THREADS), "precisions": {}}
    for precision, bf16 in (("fp32", False), ("bf16", True)):
        a, b = (whole_step(backbone, loss_fn, x, y, t, bf16) for t in THREADS)
        grad_norm = lambda s: torch.sqrt(sum((g.float() ** 2).sum() for g in s["grads"].values()))
        flat = lambda s: torch.cat([g.float().flatten() for g in s["grads"].values()])
        whole = {
            "embeddings": rel(a["embeddings"], b["embeddings"]),
            "loss": rel(a["loss"], b["loss"]),
            "gradient": float((flat(a) - flat(b)).norm() / flat(a).norm()),
            "gradient_norm": float(abs(grad_norm(a) - grad_norm(b)) / grad_norm(a)),
            "gradient_cosine": float(torch.nn.functional.cosine_similarity(flat(a).double(), flat(b).double(), dim=0)),
        }
        torch.set_num_threads(THREADS[0])
        modules = []
        for i, (name, module, inp) in enumerate(leaf_inputs(backbone, x, bf16)):
            one, two = (module_alone(module, inp, t, bf16, seed=i) for t in THREADS)
            modules.append(
                {
                    "module": name,
                    "kind": describe(module),
                    "input": list(inp.shape),
                    "forward": rel(one["out"], two["out"]),
                    "grad_input": rel(one["grad_in"], two["grad_in"]),
                    "grad_weights": max([rel(p, q) for p, q in zip(one["grad_params"], two["grad_params"]) if p is not None] or [0.0]),
                }
            )
        torch.set_num_threads(THREADS[0])
        e1 = whole_step(backbone, loss_fn, x, y, THREADS[0], bf16)["embeddings"]  # reference: the same run twice is identical
        raw["precisions"][precision] = {"whole_step": whole, "repeat_1_thread": rel(a["embeddings"], e1), "modules": modules}
        print(precision, json.dumps(whole))
    # bf16 against fp32 (1 thread), as is and with BatchNorm pinned to fp32: is the bf16 step itself close to fp32's?
    cos = lambda a, b: float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    ref = whole_step(backbone, loss_fn, x, y, THREADS[0], False)
    raw["versus_fp32"] = {}
    for name, pin in (("bf16", False), ("bf16, BatchNorm pinned to fp32", True)):
        a, b = (whole_step(backbone, loss_fn, x, y, t, True, pin_norms=pin) for t in THREADS)
        raw["versus_fp32"][name] = {
            "embeddings_1_vs_2_threads": rel(a["embeddings"], b["embeddings"]),
            "gradient_cosine_1_vs_2_threads": cos(a["flat"], b["flat"]),
            "embeddings_vs_fp32": rel(ref["embeddings"], a["embeddings"]),
            "gradient_cosine_vs_fp32": cos(ref["flat"], a["flat"]),
        }
        print(name, json.dumps(raw["versus_fp32"][name]))
    out = record.write("thread_ops", args, raw, tables.summarise_thread_ops(raw))
    print(tables.render(json.loads(out.read_text())))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
