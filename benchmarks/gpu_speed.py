"""Deploy-form speed of every preset beside torchvision's ResNets (conv-BN fused) and timm's RepVGG (when timm is
importable), in one run with one timer, under the paper's protocol and fp16 channels_last; the paper's Table 4
speeds (GTX 1080Ti) and ratios printed beside.

Run: python benchmarks/gpu_speed.py [--device auto] [--protocols paper,fp16_cl] [--presets all] [--quick]
Targets (issue 10): our deploy forms >= timm's for every preset, in fp32 and fp16 channels_last (on a GPU).
Ratios are to ResNet-50 measured in the same run (the paper's ratios use its own ResNet-50 figure). `--quick`
runs A0 and ResNet-18 only (a smoke run for a CPU).
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from repvgg_search.analysis.reference import paper_reference
from repvgg_search.devices import resolve_device
from repvgg_search.models import create_model, list_models, reparameterize_model
from repvgg_search.profile import measure, resolve_protocol

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
PAPER_NAMES = {"resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50", "resnet101": "ResNet-101",
               "resnet152": "ResNet-152"}  # fmt: skip


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every BN that follows a conv (convN/bnN pairs and Sequential(conv, bn)) into the conv, in eval mode."""
    for module in list(model.modules()):
        children = dict(module.named_children())
        for name, child in children.items():
            partner = name.replace("conv", "bn")
            if isinstance(child, nn.Conv2d) and partner != name and isinstance(children.get(partner), nn.BatchNorm2d):
                setattr(module, name, fuse_conv_bn_eval(child, children[partner]))
                setattr(module, partner, nn.Identity())
        if isinstance(module, nn.Sequential):
            items = list(module)
            for i in range(len(items) - 1):
                if isinstance(items[i], nn.Conv2d) and isinstance(items[i + 1], nn.BatchNorm2d):
                    module[i], module[i + 1] = fuse_conv_bn_eval(items[i], items[i + 1]), nn.Identity()
    return model


def models(presets: list[str], resnets: list[str]):
    """(row name, family, deploy-form model) for our presets, timm's RepVGG and the fused ResNets."""
    import torchvision

    for preset in presets:
        yield preset, "ours", lambda p=preset: reparameterize_model(create_model(p).eval())
        timm_model = _timm(preset)
        if timm_model is not None:
            yield preset, "timm", timm_model
    for name in resnets:
        yield name, "torchvision", lambda n=name: fuse_conv_bn(getattr(torchvision.models, n)(weights=None).eval())


def _timm(preset: str):
    with contextlib.suppress(ImportError):
        import timm
        from timm.utils.model import reparameterize_model as timm_reparam

        if f"repvgg_{preset}" in timm.list_models("repvgg*"):
            return lambda: timm_reparam(timm.create_model(f"repvgg_{preset}").eval())
    return None


def paper_speed(name: str) -> float | None:
    ref = paper_reference()
    key = PAPER_NAMES.get(name) or f"RepVGG-{name.upper().replace('G', 'g')}"
    entry = ref["models"].get(key) or ref["baselines"].get(key)
    return entry.get("speed") if entry else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--protocols", default="paper,fp16_cl")
    p.add_argument("--presets", default="all", help="comma-separated presets, or all (the paper's)")
    p.add_argument("--quick", action="store_true", help="A0 and ResNet-18 only")
    args = p.parse_args()
    device = resolve_device(args.device)
    presets = [m for m in list_models() if m != "d2se"] if args.presets == "all" else args.presets.split(",")
    resnets = list(RESNETS)
    if args.quick:
        presets, resnets = ["a0"], ["resnet18", "resnet50"]
    torch.manual_seed(0)
    for name in args.protocols.split(","):
        protocol = resolve_protocol(name, device)
        rows = [(row, family, measure(build(), protocol, device)) for row, family, build in models(presets, resnets)]
        report(protocol.name, rows, device)


def report(protocol: str, rows: list, device: torch.device) -> None:
    ours = {r: s for r, f, s in rows if f != "timm"}
    timm_speeds = {r: s["images_per_s"] for r, f, s in rows if f == "timm"}
    base = ours.get("resnet50", {}).get("images_per_s")
    first = rows[0][2]
    print(f"\nprotocol {protocol}: batch {first['batch_size']}, {'x'.join(map(str, first['input_size']))}, "
          f"{first['dtype']}, TF32 {first['tf32']}, {first['device_name']} ({device.type}); median of "
          f"{len(first['rounds_images_per_s'])} rounds; ratios to ResNet-50 of this run")  # fmt: skip
    print(f"{'model':<10} {'images/s':>10} {'spread':>7} {'timm':>10} {'ours/timm':>9} {'/R50':>6} "
          f"{'paper':>7} {'paper /R50':>10}")  # fmt: skip
    for name, s in ours.items():
        t, paper, ips = timm_speeds.get(name), paper_speed(name), s["images_per_s"]
        cells = [
            f"{name:<10}",
            f"{ips:10.1f}",
            f"{s['spread']:7.3f}",
            f"{t:10.1f}" if t else f"{'-':>10}",
            f"{ips / t:9.3f}" if t else f"{'-':>9}",
            f"{ips / base:6.2f}" if base else f"{'-':>6}",
            f"{paper:7d}" if paper else f"{'-':>7}",
            f"{paper / paper_speed('resnet50'):10.2f}" if paper else f"{'-':>10}",
        ]
        print(" ".join(cells))


if __name__ == "__main__":
    main()
