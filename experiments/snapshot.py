"""A training run's weights as they stand: the model in a checkpoint written as the file the
finished run would write, so that `adaptir bench` can score a long run while it trains (the
learning curves in docs/training.md). Training goes on untouched.

- a pre-training checkpoint (`adaptir pretrain`) becomes a base file (`--base FILE`);
- a fine-tuning checkpoint (`adaptir finetune`) becomes an adapter file (`--adapter FILE`) for the
  base given with --base, which must be the base it was trained on.

Usage: python experiments/snapshot.py CHECKPOINT OUT.safetensors [--base NAME|FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from adaptir_cli.adapters import get_method, inject, load_adapter_state_dict, save_adapter
from adaptir_cli.bases.compactir import build_compactir, infer_config
from adaptir_cli.training.base_file import save_base
from adaptir_cli.weights.resolve import load_base


def snapshot(checkpoint: Path, out: Path, base: str | None = None) -> Path:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    identity = json.loads(state["identity"])
    made = {"snapshot_of": str(checkpoint), "step": state["step"]}
    if identity["command"] == "pretrain":
        module = build_compactir(infer_config(state["trainable"]))  # the shape comes from the tensors
        module.load_state_dict(state["trainable"], strict=True)
        return save_base(out, module, {**made, "arch": identity["arch"], "config": identity["config"]})
    if base is None:
        raise SystemExit("a fine-tuning checkpoint needs --base: the base it was trained on")
    loaded = load_base(base)
    if loaded.sha256 != identity["base_sha256"]:
        raise SystemExit(f"{checkpoint} was trained on another base (sha256 {identity['base_sha256'][:12]}...)")
    method = identity["method"]
    config = get_method(method).config_from_dict(identity["method_config"])
    inject(loaded.module, loaded.descriptor, method, config)
    load_adapter_state_dict(loaded.module, state["trainable"])
    return save_adapter(out, loaded.module, method=method, config=config, base=loaded, task=identity["task"],
                        training=made)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--base", help="for a fine-tuning checkpoint: the base it was trained on")
    args = parser.parse_args()
    print(snapshot(args.checkpoint, args.out, args.base))


if __name__ == "__main__":
    main()
