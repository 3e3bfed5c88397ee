"""benchmarks/gpu_suite.py on the CPU with --quick: the JSON it writes for the GPU run is complete."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def suite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_suite", REPO / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_cpu_run_records_every_section_and_the_targets(suite: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    suite.main(["--device", "cpu", "--quick", "--only", "patch_floor", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["complete"] is True
    assert {"created", "torch", "cuda", "gpu", "tf32"} <= result["environment"].keys()
    assert list(result["sections"]) == list(suite.SECTIONS)
    floor = result["sections"]["patch_floor"]
    assert floor["status"] == "ok", floor
    for precision, target in (("fp32", 492.0), ("bf16", 1230.0)):
        rate = floor[precision]["patches_per_second"]
        assert rate["value"] > 0 and rate["target"]["value"] == target and rate["unit"] == "patches/s"
        assert "speedup" not in rate, "--quick sizes compare with no target"
    assert floor["fp32"]["tf32"] is False
    others = [section for name, section in result["sections"].items() if name != "patch_floor"]
    assert all(section["status"] == "skipped" and section["reason"] for section in others)


def test_a_failing_section_is_recorded_and_the_next_one_still_runs(
    suite: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ctx: object) -> dict:
        raise RuntimeError("no such kernel")

    monkeypatch.setitem(suite.SECTIONS, "ipt_restore", broken)
    out = tmp_path / "suite.json"
    suite.main(["--device", "cpu", "--quick", "--only", "ipt_restore", "--only", "pytest_cuda", "--out", str(out)])
    sections = json.loads(out.read_text())["sections"]
    assert sections["ipt_restore"]["status"] == "error"
    assert sections["ipt_restore"]["error"] == "RuntimeError: no such kernel"
    assert sections["pytest_cuda"]["status"] == "skipped", "it ran after the failure, and skipped on the CPU"
    assert "--device cuda" in sections["pytest_cuda"]["reason"]


def test_a_run_stopped_midway_leaves_what_it_measured(
    suite: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a time limit's kill leaves: the JSON is rewritten after every section."""
    def stopped(ctx: object) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setitem(suite.SECTIONS, "emt_x4", stopped)
    out = tmp_path / "suite.json"
    with pytest.raises(KeyboardInterrupt):
        suite.main(["--device", "cpu", "--quick", "--only", "patch_floor", "--only", "emt_x4", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["complete"] is False
    assert result["sections"]["patch_floor"]["status"] == "ok"
    assert result["sections"]["emt_x4"]["status"] == "not run"
