"""Convert the published EMT and LMLT-tiny checkpoints into the safetensors shipped in the package.

Each file is checked against the manifest's sha256 of the published original, converted exactly as
`adaptir models import` converts it (strict load, canonical keys, the original's sha256 recorded as
the base's identity), written to adaptir_cli/weights/bundled/NAME.safetensors with its licence text,
and the manifest values of the shipped file are printed for weights_manifest.toml.

Usage: python experiments/bundle_published.py [WEIGHTS_DIR]   (default: $ADAPTIR_SHARED/weights)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from adaptir_cli.bases.loading import sha256_file
from adaptir_cli.weights.importing import convert
from adaptir_cli.weights.manifest import BUNDLED_DIR, default_manifest

# manifest name -> (published file, licence text), as named in ../shared/weights/README.md
PUBLISHED = {
    "emt-x2": ("EMT_LSR_x2.pth", "EMT-LICENSE.txt"),
    "emt-x3": ("EMT_LSR_x3.pth", "EMT-LICENSE.txt"),
    "emt-x4": ("EMT_LSR_x4.pth", "EMT-LICENSE.txt"),
    "lmlt-tiny-x2": ("LMLT_tiny_x2.pth", "LMLT-LICENSE.txt"),
    "lmlt-tiny-x3": ("LMLT_tiny_x3.pth", "LMLT-LICENSE.txt"),
    "lmlt-tiny-x4": ("LMLT_tiny_x4.pth", "LMLT-LICENSE.txt"),
}


def main(weights: Path) -> None:
    manifest = default_manifest()
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["ADAPTIR_HOME"] = scratch  # convert() writes into the cache; the cache is thrown away
        for name, (filename, licence) in PUBLISHED.items():
            entry, original = manifest.base(name), weights / filename
            digest = sha256_file(original)
            if digest != entry.sha256:
                sys.exit(f"{original}: sha256 {digest} is not the published {name} ({entry.sha256})")
            target = BUNDLED_DIR / f"{name}.safetensors"
            shutil.move(convert(entry, original, source_sha256=digest), target)
            target.chmod(0o644)
            shutil.copyfile(weights / licence, BUNDLED_DIR / licence)
            print(f'[bases.{name}]\npath = "{target.name}"\nbundled_size = {target.stat().st_size}\n'
                  f'bundled_sha256 = "{sha256_file(target)}"\nlicense_file = "{licence}"\n')


if __name__ == "__main__":
    default = Path(os.environ.get("ADAPTIR_SHARED", "../shared")) / "weights"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
