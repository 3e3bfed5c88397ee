"""Print the markdown tables of docs/benchmarks.md from the `adaptir bench --json` results files.

    python experiments/bench_tables.py experiments/results/*.json

Numbers are never typed into the docs: rerun the benchmarks, rerun this, paste its output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from adaptir_cli import markdown


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
    ]
    rows = [
        [dataset["name"], label, values["images_scored"], _pair(values, channel), _pair(values, other),
         "-" if values["seconds_per_image"] is None else f"{values['seconds_per_image']:.2f}"]
        for dataset in payload["datasets"] for label, values in dataset["results"].items()
    ]
    header = ["set", "method", "images", f"{channel.upper()} PSNR / SSIM", f"{other.upper()} PSNR / SSIM", "s / image"]
    return "\n".join(lines + markdown.table(header, rows, "llrrrr"))


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
