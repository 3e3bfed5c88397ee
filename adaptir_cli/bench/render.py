"""Showing and saving benchmark results: the rich tables, the JSON results file and the CSV.

The JSON file is the record (settings, versions, base and adapter hashes, per-image values);
docs tables are generated from it. Non-finite values are written as the strings "inf" (PSNR of
identical images) or null (a mean over no image), so the file stays valid JSON.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from adaptir_cli.atomic_files import atomic_write_text
from adaptir_cli.bench.protocol import CHANNELS, Channel
from adaptir_cli.bench.runner import BenchResult, ContenderResult, RunInfo, SpeedReport

RESULTS_FORMAT = "adaptir-bench"
RESULTS_VERSION = 1


def _number(value: float | None) -> float | str | None:
    if value is None or math.isnan(value):
        return None
    return "inf" if math.isinf(value) else value


def _info_json(info: RunInfo) -> dict[str, object]:
    return {
        "task": info.task, "base": info.base, "device": info.device, "precision": info.precision,
        "tile": info.tile, "accelerator": info.accelerator, "created": info.created, "versions": info.versions,
        "machine": info.machine,
    }


def _method_json(result: ContenderResult) -> dict[str, object]:
    return {
        "images_scored": len(result.scores),
        "psnr": {c: _number(result.psnr(c)) for c in CHANNELS},
        "ssim": {c: _number(result.ssim(c)) for c in CHANNELS},
        "seconds_per_image": _number(result.seconds_per_image),
        "megapixels_per_second": _number(result.megapixels_per_second),
        "per_image": [
            {
                "image": s.image,
                "psnr": {c: _number(s.psnr[c]) for c in CHANNELS},
                "ssim": {c: _number(s.ssim[c]) for c in CHANNELS},
                "seconds": _number(s.seconds),
            }
            for s in result.scores
        ],
    }


def bench_to_json(result: BenchResult) -> dict[str, object]:
    return {
        "format": RESULTS_FORMAT,
        "format_version": RESULTS_VERSION,
        "kind": "quality",
        **_info_json(result.info),
        "protocol": result.protocol.to_json(),
        "methods": [m.to_json() for m in result.methods],
        "datasets": [
            {
                "name": d.name,
                "folder": str(d.folder),
                "images": d.images,
                "paired": d.paired,
                "notes": d.notes,
                "failures": [{"image": f.image, "method": f.method, "error": f.error} for f in d.failures],
                "results": {r.method.label: _method_json(r) for r in d.results},
            }
            for d in result.datasets
        ],
    }


def speed_to_json(report: SpeedReport) -> dict[str, object]:
    return {
        "format": RESULTS_FORMAT,
        "format_version": RESULTS_VERSION,
        "kind": "speed",
        **_info_json(report.info),
        "results": [
            {
                "method": r.label, "input_size": list(r.input_size), "output_size": list(r.output_size),
                "warmup": r.warmup, "seconds": r.seconds, "median_seconds": r.median,
                "megapixels_per_second": r.megapixels_per_second,
            }
            for r in report.results
        ],
    }


def write_json(path: Path, payload: dict[str, object]) -> None:
    """Write the results file; '-' writes to stdout."""
    text = json.dumps(payload, indent=2) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    atomic_write_text(path, text)  # a half-written results file would poison the docs tables


CSV_COLUMNS = ("dataset", "method", "row", "image", "psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "seconds")


def write_csv(path: Path, result: BenchResult) -> None:
    """One row per image and method, then a 'mean' row per set and method."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(CSV_COLUMNS)
    for dataset in result.datasets:
        for r in dataset.results:
            label = r.method.label
            for s in r.scores:
                writer.writerow([dataset.name, label, "image", s.image, s.psnr["y"], s.ssim["y"],
                                 s.psnr["rgb"], s.ssim["rgb"], "" if s.seconds is None else s.seconds])
            seconds = r.seconds_per_image
            writer.writerow([dataset.name, label, "mean", "", r.psnr("y"), r.ssim("y"), r.psnr("rgb"),
                             r.ssim("rgb"), "" if seconds is None else seconds])
    atomic_write_text(path, text.getvalue())


def _header(console: Console, info: RunInfo, protocol_rows: list[tuple[str, str]], adapters: str | None) -> None:
    base = "none (baseline only)"
    if info.base is not None:
        base = f"{info.base['name']} ({info.base['architecture']}), sha256 {info.base['sha256']}"
    rows = [("Task", info.task), *protocol_rows, ("Base", base)]
    if adapters is not None:
        rows.append(("Adapters", adapters))
    if info.device is not None:
        tile = info.tile or {}
        tiling = "whole images" if not tile.get("tile") else f"tile {tile['tile']}, overlap {tile['overlap']}"
        rows.append(("Device", f"{info.device}, {info.precision}, {tiling}"))
    for key, value in rows:
        console.print(f"[bold]{key:<10}[/] {escape(value)}", highlight=False, soft_wrap=True)


def _psnr_ssim(result: ContenderResult, channel: Channel) -> str:
    if not result.scores:
        return "-"
    return f"{result.psnr(channel):.2f} / {result.ssim(channel):.4f}"


def print_bench(console: Console, result: BenchResult) -> None:
    """The header stating the protocol, a comparison table (one column per method), the details."""
    protocol = result.protocol
    adapters = [
        f"{m.label}: {m.path} (sha256 {m.sha256}{', forced' if m.forced else ''})"
        for m in result.methods if m.kind == "adapter"
    ]
    inputs = protocol.degradation
    paired = [d.name for d in result.datasets if d.paired]
    if paired:
        others = f"; other sets: {inputs}" if len(paired) < len(result.datasets) else ""
        inputs = f"{', '.join(paired)}: the set's own inputs{others}"
    _header(console, result.info, [("Protocol", protocol.describe()), ("Inputs", inputs)], "; ".join(adapters) or "none")
    channel, other = protocol.channel, protocol.other_channel
    if len(result.methods) > 1:
        compare = Table(title=f"PSNR / SSIM ({channel.upper()})", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        compare.add_column("Set", no_wrap=True)
        compare.add_column("Images", justify="right")
        for method in result.methods:
            compare.add_column(escape(method.label), justify="right")
        for d in result.datasets:
            compare.add_row(escape(d.name), str(d.images), *(_psnr_ssim(r, channel) for r in d.results))
        console.print(compare)
    details = Table(title="Details", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("Set", "Method"):
        details.add_column(name, no_wrap=True)
    for name in ("Images", f"{channel.upper()} PSNR / SSIM", f"{other.upper()} PSNR / SSIM", "s/image", "MP/s"):
        details.add_column(name, justify="right", no_wrap=True)
    for d in result.datasets:
        for r in d.results:
            seconds, speed = r.seconds_per_image, r.megapixels_per_second
            scored = str(d.images) if len(r.scores) == d.images else f"{len(r.scores)}/{d.images}"
            details.add_row(
                escape(d.name), escape(r.method.label), scored, _psnr_ssim(r, channel), _psnr_ssim(r, other),
                "-" if seconds is None else f"{seconds:.3f}", "-" if speed is None else f"{speed:.3f}",
            )
        details.add_section()
    console.print(details)
    for d in result.datasets:
        for note in d.notes:
            console.print(f"[yellow]{escape(d.name)}: {escape(note)}[/]", highlight=False)


def print_speed(console: Console, report: SpeedReport) -> None:
    _header(console, report.info, [], None)
    table = Table(title="Restore speed (median after warm-up)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("Method", "Input", "Output"):
        table.add_column(name)
    for name in ("Runs", "Median s", "MP/s"):
        table.add_column(name, justify="right")
    for r in report.results:
        table.add_row(
            escape(r.label), f"{r.input_size[1]}x{r.input_size[0]}", f"{r.output_size[1]}x{r.output_size[0]}",
            f"{len(r.seconds)} (+{r.warmup})", f"{r.median:.4f}", f"{r.megapixels_per_second:.3f}",
        )
    console.print(table)
