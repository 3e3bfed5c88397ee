"""LMLT-tiny base: strict loading of the published files, Set5 reproduction, shape inference."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adaptir_cli.bases import build_base, detect_architecture, load_base_file
from adaptir_cli.bases.lmlt import architecture
from adaptir_cli.bases.lmlt.arch import CCM, LMLT
from adaptir_cli.metrics import psnr

# Set5 Y-PSNR of the authors' code with `params` (../shared/weights/LMLT.md, section 7).
SET5_PSNR = {2: 38.0088, 3: 34.3693, 4: 32.1842}
TINY = {"scale": 2, "dim": 8, "blocks": 1, "levels": 4, "ffn_dim": 16}


def _weights(shared: Path, scale: int) -> Path:
    return shared / "weights" / f"LMLT_tiny_x{scale}.pth"


def _tiny(**overrides: int) -> LMLT:
    model = LMLT(**{**TINY, **overrides}).eval()
    # Non-trivial norms so that a round trip that dropped them would show.
    for name, param in model.named_parameters():
        if "norm" in name:
            param.data.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_published_file_loads_strictly_with_params(shared: Path, scale: int) -> None:
    base = load_base_file(_weights(shared, scale))
    descriptor = base.descriptor
    assert descriptor.architecture == "lmlt"
    assert descriptor.heads["sr" + str(scale)].scale == scale
    assert (descriptor.min_size, descriptor.size_multiple, descriptor.mlp_dim) == (33, 64, 36)
    assert descriptor.config == {"scale": scale, "dim": 36, "blocks": 8, "levels": 4, "ffn_dim": 72, "window_size": 8}
    assert sum(p.numel() for p in base.module.parameters()) == {2: 239_340, 3: 244_215, 4: 251_040}[scale]

    # The file holds `params` and `params_ema` with different values; the authors evaluate `params`.
    stored = torch.load(_weights(shared, scale), map_location="cpu", weights_only=True)
    loaded = base.module.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in stored["params"].items())
    assert not all(torch.equal(loaded[k], v) for k, v in stored["params_ema"].items())

    targets = [n for n, _ in base.module.named_modules() if re.fullmatch(descriptor.mlp_pattern, n)]
    assert targets == [f"feats.{b}.ccm" for b in range(8)]


@pytest.mark.slow
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_y_psnr_matches_authors_code(shared: Path, scale: int) -> None:
    base = load_base_file(_weights(shared, scale))
    golden = shared / "data" / "golden" / "Set5_bicubic"
    scores = []
    for lr_path in sorted((golden / f"LR_x{scale}").glob("*.png")):
        lr = np.array(Image.open(lr_path).convert("RGB"))
        hr = np.array(Image.open(golden / f"HR_x{scale}" / lr_path.name).convert("RGB"))
        x = torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            y = base(x, f"sr{scale}")
        out = (y.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
        scores.append(psnr(out, hr, crop_border=scale, test_y_channel=True))
    assert len(scores) == 5
    assert float(np.mean(scores)) == pytest.approx(SET5_PSNR[scale], abs=5e-4)


def test_random_variant_round_trips_through_detection() -> None:
    model = _tiny(scale=3, levels=2)
    state = model.state_dict()
    assert detect_architecture(state).name == "lmlt"
    base = build_base(state, name="tiny", sha256="0" * 64, source="<tiny>")
    assert base.descriptor.config == {**TINY, "scale": 3, "levels": 2, "window_size": 8}
    assert (base.descriptor.size_multiple, base.descriptor.min_size) == (16, 9)
    x = torch.rand(1, 3, 9, 37)
    with torch.no_grad():
        assert torch.equal(base(x, "sr3"), model(x))


def test_detection_and_idempotent_canonicalisation() -> None:
    emt_like = {"sub_mean.weight": torch.zeros(3, 3, 1, 1), "tail.0.weight": torch.zeros(12, 60, 3, 3)}
    assert not architecture.detect(emt_like)
    state = _tiny().state_dict()
    once = architecture.canonicalize(state)
    assert architecture.detect(once)
    assert architecture.canonicalize(once).keys() == once.keys() == state.keys()


def test_small_inputs_are_rejected_with_the_minimum_size() -> None:
    model = _tiny()
    with pytest.raises(ValueError, match="at least 33 x 33"):
        model(torch.rand(1, 3, 32, 80))
    assert model(torch.rand(1, 3, 33, 33)).shape == (1, 3, 66, 66)


@pytest.mark.parametrize(("height", "width"), [(35, 47), (64, 71)])
def test_odd_sizes_give_scaled_output(height: int, width: int) -> None:
    model = _tiny(scale=3)
    with torch.no_grad():
        y = model(torch.rand(2, 3, height, width))
    assert y.shape == (2, 3, 3 * height, 3 * width)


def test_ffn_module_sees_the_normalised_input() -> None:
    # AdaptIR wraps the modules matched by mlp_pattern and must get LN2(f), like the CCM itself.
    model = _tiny(blocks=2)
    seen: dict[str, torch.Tensor] = {}
    block = model.feats[1]
    block.norm2.register_forward_hook(lambda _m, _i, out: seen.__setitem__("norm2", out))
    block.ccm.register_forward_hook(lambda _m, inputs, _o: seen.__setitem__("ccm", inputs[0]))
    with torch.no_grad():
        model(torch.rand(1, 3, 40, 40))
    assert isinstance(block.ccm, CCM)
    assert seen["ccm"] is seen["norm2"]
