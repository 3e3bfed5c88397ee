"""Training: data pairing and checks, deterministic sampling, the loop, resume, DDP, pretrain, the CLI.

Everything runs on tiny random bases (EMT, IPT, and a CompactIR pre-trained here for 4 steps) and
a few generated images; the real BSD400 is only used to check its Rain100L exclusion list.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from adaptir_cli.adapters import adapter_state_dict, inject, read_adapter, remove_adapters
from adaptir_cli.adapters.adaptir import AdaptIRConfig
from adaptir_cli.adapters.lora import LoRAConfig
from adaptir_cli.bases import LoadedBase, load_base_file
from adaptir_cli.bases.ipt import IPT, TINY_CONFIG, official_state_dict
from adaptir_cli.cli.app import app
from adaptir_cli.cli.pretrain import parse_tasks
from adaptir_cli.training.checkpoint import (
    Checkpoint,
    History,
    ResumeError,
    check_resumable,
    checkpoint_path,
    load_checkpoint,
)
from adaptir_cli.training.data import (
    DataError,
    DataOptions,
    ImageSet,
    check_sizes,
    AUTO_VALIDATION,
    holdout,
    list_images,
    load_clean,
    load_pairs,
    read_name_list,
)
from adaptir_cli.training.sampling import BatchSampler, BatchStream, TaskData, training_degradation
from adaptir_cli.bases.loading import tensor_digest
from adaptir_cli.training.finetune import base_state, finetune, finetune_config
from adaptir_cli.training.loop import LoopSettings, TrainingInterrupted
from adaptir_cli.training.pretrain import compactir_config, init_config
from adaptir_cli.training.pretrain import pretrain as run_pretrain
from adaptir_cli.training.schedule import Schedule

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def _smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Natural-ish content (low frequencies plus some detail), so restoration has something to learn."""
    coarse = rng.uniform(0, 255, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _write(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clean")
    rng = np.random.default_rng(0)
    for index in range(4):
        _write(folder / f"img{index}.png", _smooth_image(rng, 48, 48))
    return folder



# --- data ----------------------------------------------------------------------------------


def test_pairs_by_name_stem_or_template_and_lists_every_missing_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png", "c.png"):
        _write(tmp_path / "gt" / name, _smooth_image(rng, 32, 32))
    _write(tmp_path / "lq" / "a.png", _smooth_image(rng, 16, 16))
    _write(tmp_path / "lq" / "b.jpg", _smooth_image(rng, 16, 16))  # same stem, other format
    with pytest.raises(DataError) as missing:
        load_pairs(tmp_path / "gt", tmp_path / "lq")
    assert "1 ground-truth images have no input" in str(missing.value) and "c.png" in str(missing.value)
    _write(tmp_path / "lq" / "c.png", _smooth_image(rng, 16, 16))
    assert load_pairs(tmp_path / "gt", tmp_path / "lq").names == ["a.png", "b.png", "c.png"]
    for name in ("a", "b", "c"):
        _write(tmp_path / "lq4" / f"{name}x2.png", _smooth_image(rng, 16, 16))
    paired = load_pairs(tmp_path / "gt", tmp_path / "lq4", template="{stem}x2{ext}")
    assert paired.lq is not None and paired.lq[0].shape == (16, 16, 3)


def test_size_check_lists_every_offending_pair_before_training() -> None:
    gt = [np.zeros((32, 32, 3), np.uint8), np.zeros((30, 32, 3), np.uint8), np.zeros((33, 33, 3), np.uint8)]
    lq = [np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)]
    images = ImageSet(["good.png", "short.png", "modcrop.png"], gt, lq)
    with pytest.raises(DataError) as error:
        check_sizes(images, scale=2, patch=8)
    assert "1 of 3 images" in str(error.value) and "short.png" in str(error.value)
    with pytest.raises(DataError, match="3 of 3 images"):
        check_sizes(images, scale=2, patch=20)
    check_sizes(ImageSet(["x"], [np.zeros((40, 40, 3), np.uint8)]), scale=2, patch=20)


def test_exclusion_list_and_seeded_holdout(shared: Path, tmp_path: Path) -> None:
    listing = tmp_path / "exclude.txt"
    listing.write_text((REPO / "experiments" / "default" / "rain100l_backgrounds.txt").read_text() + "# a comment\n")
    names = read_name_list(listing)
    assert len(names) == 42 and "2092.jpg" in names
    kept = list_images(shared / "data" / "train" / "BSD400", names)
    assert len(kept) == 358 and not names & {path.name for path in kept}
    train, held = holdout(10, 0.2, seed=3)
    assert len(held) == 2 and sorted(train + held) == list(range(10))
    assert holdout(10, 0.2, seed=3) == (train, held) and holdout(10, 0.2, seed=4) != (train, held)
    with pytest.raises(DataError, match="at least 2 images"):
        holdout(1, 0.5, seed=0)


@pytest.mark.parametrize(("count", "held"), [(1, 0), (2, 1), (8, 1), (30, 3), (358, 8)])
def test_the_default_validation_split_is_a_tenth_at_most_eight_images(count: int, held: int) -> None:
    train, validation = holdout(count, AUTO_VALIDATION, seed=0)
    assert len(validation) == held and len(train) == count - held


# --- sampling and schedules -----------------------------------------------------------------


def _sampler(clean_dir: Path, global_batch: int) -> BatchSampler:
    images = load_clean(clean_dir)
    task = TaskData("sr2", 0, 2, images, training_degradation("sr2"))
    return BatchSampler([task], patch=8, global_batch=global_batch, seed=5)


def test_each_process_slice_is_its_part_of_the_global_batch(clean_dir: Path) -> None:
    sampler = _sampler(clean_dir, global_batch=4)
    whole = sampler.batch(3, range(4))
    halves = [sampler.batch(3, indices) for indices in ([0, 1], [2, 3])]
    assert torch.equal(torch.cat([h.lq for h in halves]), whole.lq)
    assert torch.equal(torch.cat([h.gt for h in halves]), whole.gt)
    assert whole.lq.shape == (4, 3, 8, 8) and whole.gt.shape == (4, 3, 16, 16)
    with BatchStream(sampler, range(4), last_step=5, workers=2) as threaded:
        for step in range(5):
            assert torch.equal(threaded.get(step).lq, sampler.batch(step, range(4)).lq)
    assert not torch.equal(sampler.batch(4, range(4)).lq, whole.lq), "steps draw different samples"


def test_schedules_warm_up_then_decay() -> None:
    cosine = Schedule("cosine", steps=10, warmup=2)
    assert [cosine.factor(s) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert cosine.factor(6) == pytest.approx(0.5) and cosine.factor(9) < 0.05
    steps = Schedule("multistep", steps=100, milestones=(0.5, 0.8), gamma=0.5)
    assert [steps.factor(s) for s in (0, 49, 50, 79, 80, 99)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    with pytest.raises(ValueError, match="warmup"):
        Schedule("cosine", steps=5, warmup=5)


def _settings(steps: int, *, batch: int = 2, patch: int = 20, **options: int) -> LoopSettings:
    """A few quick steps with a fast learning rate and a short warm-up."""
    return LoopSettings(
        steps=steps, batch=batch, patch=patch, lr=1e-3, schedule=Schedule("cosine", steps, warmup=1), seed=0, **options
    )


def _run(base_file: Path, clean_dir: Path, out: Path, settings: LoopSettings, **options) -> None:
    """The reference run's fine-tuning (sr2 on the tiny EMT), from a freshly loaded base."""
    data = DataOptions(gt=clean_dir, val_fraction=0.25, val_crop=16)
    finetune(load_base_file(base_file), "sr2", out, data, settings, device="cpu", show_progress=False, **options)


@dataclass(frozen=True)
class Reference:
    out: Path
    base: LoadedBase  # the base object trained on, adapters still injected
    base_before: dict[str, torch.Tensor]  # a copy of its tensors before training


@pytest.fixture(scope="module")
def uninterrupted(tiny_emt_file: Path, clean_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The reference run every interrupted-and-resumed run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "sr2.safetensors"
    base = load_base_file(tiny_emt_file)
    before = {key: tensor.clone() for key, tensor in base.module.state_dict().items()}
    data = DataOptions(gt=clean_dir, val_fraction=0.25, val_crop=16)
    finetune(base, "sr2", out, data, _settings(6, checkpoint_every=2, val_every=3), device="cpu", show_progress=False)
    return Reference(out, base, before)


def _same_run(a: Path, b: Path) -> None:
    first, second = load_file(a), load_file(b)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    log_a, log_b = (json.loads(path.with_suffix(".json").read_text())["history"] for path in (a, b))
    assert log_a["losses"] == log_b["losses"]
    assert [v["tasks"] for v in log_a["validations"]] == [v["tasks"] for v in log_b["validations"]]


def test_only_adapter_tensors_change_and_the_base_is_verified(uninterrupted: Reference) -> None:
    module = uninterrupted.base.module
    trained = {key: tensor.clone() for key, tensor in adapter_state_dict(module).items()}
    assert any(key.endswith(".up.weight") and tensor.abs().sum() > 0 for key, tensor in trained.items()), \
        "the zero-initialised up-projections must have trained"
    remove_adapters(module)
    after = module.state_dict()
    assert after.keys() == uninterrupted.base_before.keys()
    assert all(torch.equal(after[key], uninterrupted.base_before[key]) for key in after), "the base must not change"

    adapter = read_adapter(uninterrupted.out)
    assert adapter.base_sha256 == uninterrupted.base.sha256 and adapter.state.keys() == trained.keys()
    assert all(torch.equal(adapter.state[key], trained[key]) for key in trained)
    summary = adapter.training
    assert summary is not None and summary["base_unchanged"] and summary["steps"] == 6
    assert summary["final_validation"]["psnr"] > 0 and summary["trainable_parameters"] > 0
    assert summary["data"]["train_images"] == 3 and summary["data"]["validation_images"] == 1
    log = json.loads(uninterrupted.out.with_suffix(".json").read_text())
    # Step 0 is the bare base (the adapter starts as the identity): the score the adapter must beat.
    assert len(log["history"]["losses"]) == 6 and [v["step"] for v in log["history"]["validations"]] == [0, 3, 6]
    assert summary["start_validation"]["psnr"] == log["history"]["validations"][0]["tasks"]["sr2"]["psnr"]
    assert not checkpoint_path(uninterrupted.out).exists(), "a finished run removes its checkpoint"


def test_base_digest_ignores_injection_but_sees_any_change(tiny_emt_file: Path) -> None:
    base = load_base_file(tiny_emt_file)
    before = tensor_digest(base_state(base.module))
    inject(base.module, base.descriptor, "adaptir")
    assert tensor_digest(base_state(base.module)) == before
    with torch.no_grad():
        next(iter(base_state(base.module).values())).view(-1)[0] += 1
    assert tensor_digest(base_state(base.module)) != before


def test_loss_decreases_when_overfitting_one_image(tiny_emt_file: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    _write(tmp_path / "one" / "x.png", _smooth_image(rng, 40, 40))
    settings = LoopSettings(steps=30, batch=2, patch=20, lr=3e-2, schedule=Schedule("cosine", 30, 2), workers=0)
    outcome = finetune(load_base_file(tiny_emt_file), "sr2", tmp_path / "a.safetensors", DataOptions(gt=tmp_path / "one"),
                       settings, device="cpu", show_progress=False)
    losses = outcome.result.history.losses
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5]), losses


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and pid checks are POSIX")
def test_a_checkpoint_temporary_left_by_kill_9_is_removed_by_the_next_run(
    tiny_emt_file: Path, clean_dir: Path, tmp_path: Path
) -> None:
    from adaptir_cli.atomic_files import STALE_AFTER_SECONDS

    out = tmp_path / "sr2.safetensors"
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal, sys; from pathlib import Path; from adaptir_cli.atomic_files import atomic_write; "
        "atomic_write(Path(sys.argv[1]), lambda handle: os.kill(os.getpid(), signal.SIGKILL))"
    ), str(checkpoint_path(out))])
    assert killed.returncode == -signal.SIGKILL
    (left,) = tmp_path.glob(".sr2.ckpt.*.tmp")
    past = left.stat().st_mtime - STALE_AFTER_SECONDS - 60
    os.utime(left, (past, past))
    _run(tiny_emt_file, clean_dir, out, _settings(2))
    assert not left.exists() and out.exists()


def test_a_resume_compares_data_folders_not_how_their_paths_are_spelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shared" / "BSD400").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    saved = Checkpoint(step=3, identity={"seed": 0, "data": {"gt": str(tmp_path / "shared" / "BSD400"), "lq": None}},
                       trainable={}, optimizer={}, rng={}, history=History())
    check_resumable(saved, {"seed": 0, "data": {"gt": "../shared/BSD400", "lq": None}}, tmp_path / "run.ckpt")
    with pytest.raises(ResumeError, match="data: checkpoint"):
        check_resumable(saved, {"seed": 0, "data": {"gt": "../other", "lq": None}}, tmp_path / "run.ckpt")
    with pytest.raises(ResumeError, match="seed: checkpoint 0, now 1"):
        check_resumable(saved, {"seed": 1, "data": {"gt": "../shared/BSD400", "lq": None}}, tmp_path / "run.ckpt")


def test_killed_run_resumes_from_its_last_checkpoint(
    uninterrupted: Reference, tiny_emt_file: Path, clean_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sr2.safetensors"

    def crash(done: int) -> None:
        if done == 5:
            raise RuntimeError("killed")

    settings = _settings(6, checkpoint_every=2, val_every=3)
    with pytest.raises(RuntimeError, match="killed"):
        _run(tiny_emt_file, clean_dir, out, settings, on_step=crash)
    assert not out.exists() and load_checkpoint(checkpoint_path(out)).step == 4
    _run(tiny_emt_file, clean_dir, out, settings, resume=True)
    _same_run(out, uninterrupted.out)


@pytest.fixture
def sigint_default() -> Iterator[None]:
    """Python's own Ctrl-C handler, as in an interactive run: a background job inherits SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_default")
def test_sigint_saves_a_checkpoint_that_resumes_exactly(
    uninterrupted: Reference, tiny_emt_file: Path, clean_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sr2.safetensors"

    def interrupt(done: int) -> None:
        if done == 3:
            os.kill(os.getpid(), signal.SIGINT)

    settings = _settings(6, checkpoint_every=2, val_every=3)
    with pytest.raises(TrainingInterrupted) as stopped:
        _run(tiny_emt_file, clean_dir, out, settings, on_step=interrupt)
    assert stopped.value.step == 3 and load_checkpoint(checkpoint_path(out)).step == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the handler is restored"
    with pytest.raises(ResumeError, match="add --resume to continue it"):
        _run(tiny_emt_file, clean_dir, out, settings)
    with pytest.raises(ResumeError, match=r"global_batch: checkpoint 2, now 4"):
        _run(tiny_emt_file, clean_dir, out, _settings(6, batch=4, checkpoint_every=2, val_every=3), resume=True)
    _run(tiny_emt_file, clean_dir, out, settings, resume=True)
    _same_run(out, uninterrupted.out)


def test_fixed_size_base_trains_on_its_patch_size(tmp_path: Path, clean_dir: Path) -> None:
    torch.manual_seed(4)
    path = tmp_path / "ipt_tiny.pt"
    torch.save(official_state_dict(IPT(TINY_CONFIG)), path)
    base = load_base_file(path)
    data = DataOptions(gt=clean_dir, val_fraction=0.25, val_crop=12)
    with pytest.raises(DataError, match="only takes 12 px inputs; use --patch 12"):
        finetune(base, "denoise30", tmp_path / "a.safetensors", data, _settings(2), device="cpu", show_progress=False)
    outcome = finetune(base, "denoise30", tmp_path / "a.safetensors", data, _settings(2, patch=12), device="cpu",
                       show_progress=False)
    assert read_adapter(outcome.output).task == "denoise30"
    assert outcome.result.final_validation["denoise30"]["psnr"] > 0


# --- scale-out -----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_what_one_process_with_the_global_batch_trains(
    tiny_emt_file: Path, clean_dir: Path, tmp_path: Path
) -> None:
    """torchrun, 2 gloo CPU processes with --batch 2 each == one process with batch 4.

    The adapters have BatchNorm: with DDP's plain per-process statistics the two runs would
    differ; GlobalBatchNorm2d normalises with the global batch, so parameters *and* running
    statistics must agree (to float rounding: the batch sums are reduced in another order).
    """
    args = ["--base", str(tiny_emt_file), "--task", "sr2", "--gt", str(clean_dir), "--steps", "3", "--patch", "20",
            "--lr", "2e-3", "--warmup", "1", "--device", "cpu", "--workers", "0", "--val-fraction", "0.25",
            "--val-crop", "16", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    ddp = tmp_path / "ddp.safetensors"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(_free_port()), "-m", "adaptir_cli", "finetune", *args, "--batch", "2",
               "--out", str(ddp)]
    # Generous: at nice 19 beside other jobs, the processes may get a few percent of a core.
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    single = tmp_path / "single.safetensors"
    result = runner.invoke(app, ["finetune", *args, "--batch", "4", "--out", str(single)])
    assert result.exit_code == 0, result.output
    two, one = load_file(ddp), load_file(single)
    assert two.keys() == one.keys()
    for key in two:
        assert torch.allclose(two[key], one[key], rtol=1e-5, atol=1e-6), key
    logs = [json.loads(path.with_suffix(".json").read_text()) for path in (ddp, single)]
    assert logs[0]["summary"]["global_batch"] == logs[1]["summary"]["global_batch"] == 4
    assert logs[0]["summary"]["environment"]["processes"] == 2
    assert np.allclose(logs[0]["history"]["losses"], logs[1]["history"]["losses"], rtol=1e-5)


# --- pre-training and the commands -----------------------------------------------------------------

def test_pretrain_command_writes_a_base_that_loads_and_runs_every_head(clean_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "base.safetensors"
    result = runner.invoke(app, [
        "pretrain", "--gt", str(clean_dir), "--out", str(out), "--tasks", "sr2,denoise,derain", "--dim", "12",
        "--blocks", "2", "--attention-heads", "2", "--window", "4", "--steps", "4", "--batch", "2", "--patch", "16",
        "--val-fraction", "0.25", "--val-crop", "16", "--device", "cpu", "--workers", "0", "--json", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["final_validation"]) == {"sr2", "denoise", "derain"}
    base = load_base_file(out)
    assert {name: head.scale for name, head in base.descriptor.heads.items()} == {"sr2": 2, "denoise": 1, "derain": 1}
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        assert base(x, "sr2").shape == (1, 3, 40, 48)
        assert base(x, "denoise").shape == base(x, "derain").shape == (1, 3, 20, 24)
    log = json.loads(out.with_suffix(".json").read_text())
    assert log["summary"]["tasks"] == ["denoise", "derain", "sr2"] and len(log["history"]["losses"]) == 4
    assert log["summary"]["config"]["dim"] == 12 and not checkpoint_path(out).exists()

    # The new base takes adapters: low light borrows its denoising head.
    adapter = tmp_path / "lowlight.safetensors"
    data = DataOptions(gt=clean_dir, val_fraction=0.25, val_crop=16)
    outcome = finetune(str(out), "lowlight", adapter, data, _settings(2, patch=16), device="cpu", show_progress=False)
    assert read_adapter(adapter).base_sha256 == base.sha256 and outcome.result.final_validation["lowlight"]["psnr"] > 0


def test_a_pretrain_head_can_train_on_another_degradation_and_its_checkpoint_remembers(
    clean_dir: Path, tmp_path: Path
) -> None:
    assert parse_tasks(" denoise, derain = derain-varied,") == (["denoise", "derain"], {"derain": "derain-varied"})
    with pytest.raises(ValueError, match="'derain=' is not TASK or TASK=DEGRADATION"):
        parse_tasks("denoise,derain=")
    out = tmp_path / "x1.safetensors"
    config = compactir_config(["denoise", "derain"], dim=12, blocks=2, heads=2, window=4)
    data = DataOptions(gt=clean_dir, val_fraction=0.25, val_crop=16)
    settings = _settings(4, patch=16, checkpoint_every=2)
    varied = {"derain": "derain-varied"}

    def crash(done: int) -> None:
        if done == 3:
            raise RuntimeError("killed")

    run = functools.partial(run_pretrain, config, out, data, settings, device="cpu", show_progress=False)
    with pytest.raises(RuntimeError, match="killed"):
        run(degradations=varied, on_step=crash)
    identity = load_checkpoint(checkpoint_path(out)).identity
    assert identity["degradations"] == {"denoise": "denoise", "derain": "derain-varied"}
    with pytest.raises(ResumeError, match="degradations: checkpoint"):
        run(resume=True)  # the heads' own degradations are another run
    run(degradations=varied, resume=True)
    assert json.loads(out.with_suffix(".json").read_text())["summary"]["degradations"]["derain"] == "derain-varied"

    # A further stage starts from that file: at a negligible rate its weights come out as they went in.
    assert init_config(out) == config and init_config(out, ["derain", "denoise"], dim=12) == config
    with pytest.raises(DataError, match="has the heads denoise,derain: --tasks must name these"):
        init_config(out, ["denoise"])
    shaped = runner.invoke(app, ["pretrain", "--gt", str(clean_dir), "--init", str(out), "--dim", "16", "--out", "x"])
    assert shaped.exit_code == 2 and "is shaped dim=12: leave the size options out" in " ".join(shaped.output.split())
    second = tmp_path / "stage2.safetensors"
    staged = runner.invoke(app, [  # --tasks left out: the file's heads
        "pretrain", "--gt", str(clean_dir), "--init", str(out), "--out", str(second), "--steps", "2", "--batch", "2",
        "--patch", "16", "--lr", "1e-12", "--warmup", "1", "--val-fraction", "0.25", "--val-crop", "16",
        "--device", "cpu", "--workers", "0",
    ])
    assert staged.exit_code == 0, staged.output
    assert "derain validation PSNR: start" in staged.stderr and "(+0.00)" in staged.stderr
    assert load_file(second).keys() == load_file(out).keys()
    assert all(torch.allclose(tensor, load_file(out)[key], atol=1e-8) for key, tensor in load_file(second).items())
    summary = json.loads(second.with_suffix(".json").read_text())["summary"]
    assert set(summary["start_validation"]) == {"denoise", "derain"}  # what the stage starts from
    assert summary["init"]["sha256"] == load_base_file(out).sha256
    assert summary["degradations"] == {"denoise": "denoise", "derain": "derain"}
    with pytest.raises(DataError, match="derain-varied is x1 but task sr2 is x2"):
        run_pretrain(compactir_config(["sr2"]), out, data, settings, degradations={"sr2": "derain-varied"})
    with pytest.raises(DataError, match="given for sr2, which is not among the tasks denoise,derain"):
        run(degradations={"sr2": "sr2"})


def test_finetune_command_writes_an_adapter_that_restore_accepts(
    tiny_emt_file: Path, clean_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sr2.safetensors"
    result = runner.invoke(app, [
        "finetune", "--base", str(tiny_emt_file), "--task", "sr2", "--gt", str(clean_dir), "--out", str(out),
        "--steps", "2", "--batch", "2", "--patch", "20", "--method", "lora", "--rank", "3", "--set", "alpha=6",
        "--val-fraction", "0.25", "--device", "cpu", "--workers", "1", "--json", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["adapter"] == str(out) and Path(summary["log"]).is_file()
    assert read_adapter(out).config == LoRAConfig(rank=3, alpha=6.0)
    restored = runner.invoke(app, [
        "restore", str(next(clean_dir.iterdir())), str(tmp_path / "restored"), "--task", "sr2",
        "--base", str(tiny_emt_file), "--adapter", str(out), "--device", "cpu", "-q",
    ])
    assert restored.exit_code == 0, restored.output
    assert Image.open(next((tmp_path / "restored").iterdir())).size == (96, 96)


def test_finetune_reports_the_gain_over_the_bare_base_and_warns_without_one(
    tiny_emt_file: Path, clean_dir: Path, tmp_path: Path
) -> None:
    result = runner.invoke(app, [
        "finetune", "--base", str(tiny_emt_file), "--task", "sr2", "--gt", str(clean_dir),
        "--out", str(tmp_path / "a.safetensors"), "--steps", "1", "--batch", "1", "--patch", "20", "--lr", "1e-12",
        "--val-fraction", "0.25", "--device", "cpu", "--workers", "0", "--json",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    before, after = (summary[key]["sr2"]["psnr"] for key in ("start_validation", "final_validation"))
    text = " ".join(result.stderr.split())
    assert f"validation PSNR: base {before:.2f} dB, adapter {after:.2f} dB ({after - before:+.2f})" in text
    assert "does not beat the bare base" in text  # an lr of 1e-12 changes nothing


def test_finetune_without_training_flags_uses_the_measured_defaults(clean_dir: Path, tmp_path: Path) -> None:
    """The defaults chosen by experiments/finetune-defaults (docs/training.md), not the paper's
    500-epoch recipe (lr 1e-4, batch 16, 48 px, hidden 8 on this base): what a user gets who gives
    no training flag, from the command and from the library alike."""
    out = tmp_path / "denoise.safetensors"
    result = runner.invoke(app, [
        "finetune", "--base", "compactir-default", "--task", "denoise", "--gt", str(clean_dir), "--out", str(out),
        "--steps", "2", "--device", "cpu", "--workers", "0", "--quiet", "--json",
    ])
    assert result.exit_code == 0, result.output
    settings = json.loads(out.with_suffix(".json").read_text())["settings"]
    assert (settings["lr"], settings["batch"], settings["patch"]) == (1e-3, 16, 48)
    assert settings["schedule"]["kind"] == "cosine" and settings["grad_clip"] == 1.0
    assert settings["phase_loss"] == 2.0
    # Hidden width 16 on CompactIR's 96-wide MLPs: 18,080 trainable parameters (width 8: 8,152).
    assert json.loads(result.stdout)["trainable_parameters"] == 18_080
    assert read_adapter(out).config == AdaptIRConfig(min_hidden=16)
    library = LoopSettings.from_options(steps=2)  # what api.finetune and the experiments fill in
    assert (library.lr, library.batch, library.patch) == (settings["lr"], settings["batch"], settings["patch"])
    assert library.phase_loss == settings["phase_loss"]
    assert finetune_config("adaptir") == read_adapter(out).config


def test_finetune_command_errors(tiny_emt_file: Path, clean_dir: Path, tmp_path: Path) -> None:
    common = ["finetune", "--base", str(tiny_emt_file), "--gt", str(clean_dir), "--out", str(tmp_path / "a.safetensors")]
    unknown = runner.invoke(app, [*common, "--task", "sr5"])
    assert unknown.exit_code == 2 and "unknown task" in unknown.output
    wrong_scale = runner.invoke(app, [*common, "--task", "sr2", "--degradation", "denoise30"])
    assert wrong_scale.exit_code == 1 and "is x1 but task sr2 is x2" in wrong_scale.output
    misfit = runner.invoke(app, [*common, "--task", "sr2", "--method", "lora", "--hidden", "4"])
    assert misfit.exit_code == 2 and "LoRAConfig has no field 'hidden'; its fields: rank, alpha" in misfit.output
    sized_full = runner.invoke(app, [*common, "--task", "sr2", "--method", "full", "--rank", "2"])
    assert sized_full.exit_code == 2 and "--method full trains the whole base" in sized_full.output
    malformed = runner.invoke(app, [*common, "--task", "sr2", "--set", "frequency"])
    assert malformed.exit_code == 2 and "--set takes KEY=VALUE, got 'frequency'" in malformed.output
    no_checkpoint = runner.invoke(app, [*common, "--task", "sr2", "--resume", "--steps", "2", "--patch", "20"])
    assert no_checkpoint.exit_code == 1 and "no checkpoint to resume" in no_checkpoint.output


def test_the_phase_loss_sees_a_coherent_two_pixel_pattern_and_not_image_content() -> None:
    from adaptir_cli.training.losses import phase_components, phase_loss, training_loss

    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(2, 3, 32, 32)
    assert phase_components(torch.full((1, 3, 16, 16), 0.3)).abs().max() == 0
    signs = (1.0 - 2.0 * (torch.arange(32).view(-1, 1) + torch.arange(32)).remainder(2)).expand(2, 3, 32, 32)
    checkered = ramp + 0.01 * signs
    assert phase_loss(checkered, ramp).item() == pytest.approx(0.01 / 3)  # one of three components
    # Noise twice the pattern's amplitude, independent per pixel, costs more L1 but averages away
    # in the pooled cells: the phase loss weighs the coherent pattern more.
    noisy = ramp + 0.02 * torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert F.l1_loss(noisy, ramp) > F.l1_loss(checkered, ramp)
    assert phase_loss(noisy, ramp).item() < 0.7 * phase_loss(checkered, ramp).item()
    assert training_loss(checkered, ramp, 0.0) == F.l1_loss(checkered, ramp)
    assert training_loss(checkered, ramp, 2.0) == pytest.approx(F.l1_loss(checkered, ramp) + 2 * 0.01 / 3)


def test_a_run_without_the_phase_loss_keeps_the_identity_runs_had_before_it() -> None:
    plain = LoopSettings.from_options(steps=10, phase_loss=0.0)
    assert "phase_loss" not in plain.identity(1)  # checkpoints from before the option still resume
    assert LoopSettings.from_options(steps=10, phase_loss=2.0).identity(1)["phase_loss"] == 2.0
    with pytest.raises(ValueError, match="--phase-loss"):
        LoopSettings.from_options(steps=10, phase_loss=-1.0)
