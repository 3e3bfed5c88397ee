"""`restore` and `bench` over several processes: shares, merges, and real 2-process gloo runs.

The torchrun tests compare the files, the JSON and the exit code of two CPU processes with one
process; the merge tests check the same thing in one process, with each share run in turn.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from adaptir_cli import api
from adaptir_cli.bench.protocol import make_protocol
from adaptir_cli.bench.render import bench_to_json
from adaptir_cli.bench.runner import Contender, merge_results, plan_methods, run_benchmark
from adaptir_cli.cli.app import app
from adaptir_cli.data.datasets import find_dataset
from adaptir_cli.distributed import Distributed, gather, setup, share
from adaptir_cli.restorer import Restorer
from adaptir_cli.bases import load_base_file

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


def _process(rank: int, world: int) -> Distributed:
    """A process's place in a group that is never formed: shares need only the rank and the size."""
    return Distributed(rank, world, rank, torch.device("cpu"))


def _images(folder: Path, count: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (20 + 2 * index, 24, 3), dtype=np.uint8)).save(folder / f"img{index}.png")
    return folder


def test_shares_are_disjoint_and_cover_every_item() -> None:
    items = list(range(11))
    shares = [share(items, _process(rank, 3)) for rank in range(3)]
    assert sorted(sum(shares, [])) == items and shares[1] == [1, 4, 7, 10]
    assert share(items, _process(0, 1)) == items and share([], _process(2, 3)) == []
    assert gather("alone", _process(0, 1)) == ["alone"]


def test_alone_setup_joins_no_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = setup("cpu")
    assert (context.rank, context.world, context.main, context.active) == (0, 1, True, False)


def test_what_cannot_be_shared_is_refused_under_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # refused before any process group is joined
    piped = runner.invoke(app, ["restore", "-", str(tmp_path / "out.png"), "--task", "sr2"], input=b"png")
    assert piped.exit_code == 2 and "cannot be shared" in piped.output
    timed = runner.invoke(app, ["bench", "--task", "sr2", "--speed"])
    assert timed.exit_code == 2 and "without torchrun" in timed.output


def test_bench_shares_merge_into_the_single_process_result(tmp_path: Path, tiny_emt_file: Path) -> None:
    folder = _images(tmp_path / "set", 5)
    (folder / "img9.png").write_bytes(b"not a png")  # a failure, kept in the image order by the merge
    protocol, degradation = make_protocol("sr2")
    dataset = find_dataset(str(folder))
    restorer = Restorer(load_base_file(tiny_emt_file), device="cpu")
    methods = [Contender("bicubic", "baseline"), *plan_methods([], restorer=restorer, baseline=False, scale=2)]

    def run(context: Distributed | None):
        return run_benchmark([dataset], protocol, degradation, methods, restorer, context=context)

    single = merge_results([run(None)], [dataset])
    shared = merge_results([run(_process(rank, 3)) for rank in range(3)], [dataset])
    assert [len(result.scores) for result in shared.datasets[0].results] == [5, 5]
    assert _without_timing(bench_to_json(shared), 3) == _without_timing(bench_to_json(single), 1)


def _without_timing(report: dict, processes: int) -> dict:
    """The JSON less what differs between runs anyway (times, creation) and the process count, checked here."""
    assert report["machine"].pop("processes") == processes
    for key in ("created", "machine"):
        report.pop(key)
    for dataset in report["datasets"]:
        for result in dataset["results"].values():
            for key in ("seconds_per_image", "megapixels_per_second"):
                result.pop(key)
            for score in result["per_image"]:
                score.pop("seconds")
    return report


# --- torchrun: two gloo CPU processes ------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    return _torchrun_command("-m", "adaptir_cli", *args)


def _torchrun_command(*command: str) -> subprocess.CompletedProcess:
    """torchrun with two CPU processes of one thread running `command` (a script or -m module)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADAPTIR_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(_free_port()), *command]
    # Generous: at nice 19 beside other jobs, the processes may get a few percent of a core.
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)


def _restore_summary(stdout: str, out: Path) -> list[dict]:
    images = json.loads(stdout)["images"]
    for image in images:
        assert image.pop("seconds") >= 0
        image["output"] = str(Path(image["output"]).relative_to(out))
    return images


@pytest.mark.slow
def test_two_processes_restore_a_folder_as_one_process_does(tmp_path: Path, tiny_emt_file: Path) -> None:
    inputs = _images(tmp_path / "in", 5)
    # img1 is the second job, so process 1's: its failure must still fail the whole run.
    (inputs / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    args = [str(inputs), "--task", "sr2", "--base", str(tiny_emt_file), "--device", "cpu", "--json"]

    two = _torchrun("restore", *args[:1], str(tmp_path / "two"), *args[1:])
    assert two.returncode != 0, "a bad file in process 1 fails the run"
    one = runner.invoke(app, ["restore", *args[:1], str(tmp_path / "one"), *args[1:]])
    assert one.exit_code == 1, one.output

    summary = json.loads(two.stdout)  # printed once, by process 0
    assert summary["processes"] == 2 and (summary["ok"], summary["failed"], summary["skipped"]) == (4, 1, 0)
    assert _restore_summary(two.stdout, tmp_path / "two") == _restore_summary(one.stdout, tmp_path / "one")
    assert two.stderr.count("cannot read") == 1, two.stderr  # reported once, by the process that read it
    for name in ("img0.png", "img2.png", "img3.png", "img4.png"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["img0.png", "img2.png", "img3.png", "img4.png"]


@pytest.mark.slow
def test_two_processes_share_task_auto_and_report_each_image_once(tmp_path: Path) -> None:
    inputs = _images(tmp_path / "in", 4, seed=5)
    (inputs / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # process 0's second image
    args = [str(inputs), "--task", "auto", "--device", "cpu", "--tile", "0", "--json"]
    two = _torchrun("restore", *args[:1], str(tmp_path / "two"), *args[1:])
    one = runner.invoke(app, ["restore", *args[:1], str(tmp_path / "one"), *args[1:]])
    assert (two.returncode != 0, one.exit_code) == (True, 1), two.stderr[-3000:]
    assert _restore_summary(two.stdout, tmp_path / "two") == _restore_summary(one.stdout, tmp_path / "one")
    assert two.stderr.count("auto: ") == 3 and two.stderr.count("cannot read") == 1, two.stderr  # once each
    for name in ("img0.png", "img1.png", "img3.png"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


@pytest.mark.slow
def test_library_restore_files_shares_its_images_under_torchrun(tmp_path: Path, tiny_emt_file: Path) -> None:
    inputs = _images(tmp_path / "in", 5)
    script = tmp_path / "restore_files.py"
    script.write_text(
        "import json, os, sys\n"
        "import torch.distributed as dist\n"
        "from adaptir_cli import api\n"
        "results = api.restore_files([sys.argv[1]], sys.argv[2], 'sr2', base=sys.argv[3], device='cpu')\n"
        # A file per process: the processes' standard outputs interleave.
        "names = [r.job.source.name for r in results]\n"
        "report = {'names': names, 'still_in_group': dist.is_initialized()}\n"
        "open(os.path.join(sys.argv[4], os.environ['RANK'] + '.json'), 'w').write(json.dumps(report))\n"
    )
    run = _torchrun_command(str(script), str(inputs), str(tmp_path / "out"), str(tiny_emt_file), str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    every = [f"img{i}.png" for i in range(5)]
    reports = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    # Each process returns all the results, and leaves the group the call joined.
    assert reports == [{"names": every, "still_in_group": False}] * 2
    one = api.restore_files([inputs], tmp_path / "one", "sr2", base=tiny_emt_file, device="cpu")
    assert [r.status for r in one] == ["ok"] * 5
    for name in every:  # each image written once, as one process writes it
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


@pytest.mark.slow
def test_two_processes_bench_a_set_as_one_process_does(tmp_path: Path, tiny_emt_file: Path) -> None:
    folder = _images(tmp_path / "set", 5, seed=3)
    args = ["bench", "--task", "sr2", "--dataset", str(folder), "--base", str(tiny_emt_file), "--baseline",
            "--device", "cpu", "--quiet"]
    two = _torchrun(*args, "--json", str(tmp_path / "two.json"))
    assert two.returncode == 0, two.stderr[-3000:]
    one = runner.invoke(app, [*args, "--json", str(tmp_path / "one.json")])
    assert one.exit_code == 0, one.output
    reports = [json.loads((tmp_path / name).read_text()) for name in ("two.json", "one.json")]
    assert _without_timing(reports[0], 2) == _without_timing(reports[1], 1)
    assert two.stdout.count("bicubic") == one.stdout.count("bicubic") >= 1, "the table is printed once"
