"""``pynas info``: what was built and what this machine can run."""
from __future__ import annotations

import argparse
import json
import os
import platform

import torch

from pynas import __version__, _backend


def collect() -> dict:
    """Build and runtime facts as one JSON-serialisable dict."""
    cuda_device = bool(torch.cuda.is_available() and "cuda" in _backend.backends())
    info = {
        "version": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "backends": _backend.backends(),
        "cuda_archs": _backend.cuda_archs(),
        "cuda_device": cuda_device,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if _backend.IMPORT_ERROR:
        info["extension_error"] = _backend.IMPORT_ERROR
    return info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info))
        return 0
    archs = ", ".join(f"sm_{a}" for a in info["cuda_archs"]) or "none"
    print(f"pynas          {info['version']}")
    print(f"torch          {info['torch']} (python {info['python']})")
    print(f"backends       {', '.join(info['backends']) or 'none (extension not loaded)'}")
    print(f"cuda archs     {archs}")
    devices = ", ".join(info["cuda_devices"]) or "none"
    print(f"cuda device    {'yes' if info['cuda_device'] else 'no'} ({devices})")
    print(f"cpu threads    {info['cpu_threads']} of {info['cpu_count']} cores")
    if "extension_error" in info:
        print(f"extension      not loaded: {info['extension_error']}")
    return 0
