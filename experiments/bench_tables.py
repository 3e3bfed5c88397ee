"""Print the markdown tables of docs/benchmarks.md from the `adaptir bench --json` results files.

    python experiments/bench_tables.py experiments/results/*.json

Numbers are never typed into the docs: rerun the benchmarks, rerun this, paste its output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _pair(values: dict[str, object], channel: str) -> str:
    psnr, ssim = values["psnr"][channel], values["ssim"][channel]
    if psnr is None:
        return "-"
    return f"{psnr} / {ssim:.4f}" if isinstance(psnr, str) else f"{psnr:.2f} / {ssim:.4f}"


def quality_table(payload: dict) -> str:
    protocol = payload["protocol"]
    channel = protocol["channel"]
    other = "rgb" if channel == "y" else "y"
    sigma = f", sigma {protocol['sigma']:g}" if protocol["sigma"] is not None else ""
    base = payload["base"]["name"] if payload["base"] else "no base"
    lines = [
        f"#### {protocol['task']}{sigma}: {base} ({channel.upper()}, crop {protocol['crop']})",
        "",
        f"| set | method | images | {channel.upper()} PSNR / SSIM | {other.upper()} PSNR / SSIM | s / image |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for dataset in payload["datasets"]:
        for label, values in dataset["results"].items():
            seconds = values["seconds_per_image"]
            lines.append(
                f"| {dataset['name']} | {label} | {values['images_scored']} | {_pair(values, channel)} | "
                f"{_pair(values, other)} | {'-' if seconds is None else f'{seconds:.2f}'} |"
            )
    return "\n".join(lines)


def main(paths: list[str]) -> None:
    for path in sorted(paths):
        payload = json.loads(Path(path).read_text())
        if payload.get("format") != "adaptir-bench" or payload.get("kind") != "quality":
            continue
        print(quality_table(payload))
        print(f"\n<sub>{Path(path).name}: {payload['created']}, device {payload['device'] or '-'}, "
              f"torch {payload['versions']['torch']}</sub>\n")


if __name__ == "__main__":
    main(sys.argv[1:])
