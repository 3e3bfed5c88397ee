"""The weights manifest, cache, fetch (from a local HTTP server), import and `adaptir models`."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import typer
from safetensors import safe_open
from typer.testing import CliRunner

from adaptir_cli.bases import architectures, load_base_file
from adaptir_cli.bases.loading import WeightsError, sha256_file
from adaptir_cli.cli.models import app as models_app
from adaptir_cli.tasks import TASKS, head_for
from adaptir_cli.weights import verification
from adaptir_cli.weights.cache import cached_model, models_dir
from adaptir_cli.weights.fetch import fetch
from adaptir_cli.weights.importing import import_weights
from adaptir_cli.weights.manifest import Manifest, ManifestError, UnknownNameError, default_manifest, load_manifest
from adaptir_cli.weights.resolve import load_base

SHARED_FILES = {  # manifest name -> file in ../shared/weights
    "emt-x2": "EMT_LSR_x2.pth", "emt-x3": "EMT_LSR_x3.pth", "emt-x4": "EMT_LSR_x4.pth",
    "lmlt-tiny-x2": "LMLT_tiny_x2.pth", "lmlt-tiny-x3": "LMLT_tiny_x3.pth", "lmlt-tiny-x4": "LMLT_tiny_x4.pth",
}
IPT_NAMES = {"ipt", "ipt-sr2", "ipt-sr3", "ipt-sr4", "ipt-denoise30", "ipt-denoise50", "ipt-derain"}


# --- a tiny real EMT checkpoint, in the published {"params": ...} layout ---

def write_manifest(tmp_path: Path, body: str, bundled_dir: Path | None = None) -> Manifest:
    path = tmp_path / "manifest.toml"
    path.write_text(body, encoding="utf-8")
    return load_manifest(path, bundled_dir=bundled_dir) if bundled_dir else load_manifest(path)


def base_entry(name: str, source: str, *, sha256: str | None = None, size: int | None = None, extra: str = "") -> str:
    lines = [f"[bases.{name}]", 'architecture = "emt"', f'source = "{source}"', 'license = "MIT"',
             'description = "tiny test EMT"', 'tasks = ["sr2"]']
    lines += [f'sha256 = "{sha256}"'] if sha256 else []
    lines += [f"size = {size}"] if size else []
    return "\n".join(lines) + "\n" + extra + "\n"


def leftovers() -> list[str]:
    """Everything in the models folder, temporary files included."""
    return sorted(p.name for p in models_dir().iterdir()) if models_dir().exists() else []


# --- a local HTTP server: bodies by path, optionally with a lying Content-Length ---

@dataclass
class Server:
    url: str
    routes: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def serve(self, path: str, body: bytes, declared_length: int | None = None) -> str:
        self.routes[path] = (body, len(body) if declared_length is None else declared_length)
        return self.url + path


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            state.requests.append(self.path)
            if self.path not in state.routes:
                self.send_error(404)
                return
            body, length = state.routes[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    assert len(state.requests) <= 3, f"unexpected requests: {state.requests}"


# --- the shipped manifest ---

def test_shipped_manifest_lists_every_known_base_completely() -> None:
    manifest = default_manifest()
    assert set(manifest.bases) == set(SHARED_FILES) | IPT_NAMES | {"compactir-default", "compactir-x1"}
    for entry in manifest.bases.values():
        assert entry.architecture in architectures(), entry.name
        assert entry.license and entry.description and entry.tasks, entry.name
        if entry.name in SHARED_FILES:  # published, and shipped converted (test_default_base.py checks the files)
            assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+/raw/[0-9a-f]{40}/.+\.pth", entry.source), entry.name
            assert entry.kind == "bundled" and entry.size and entry.sha256 and entry.license_file, entry.name
            assert entry.path.stat().st_size == entry.shipped_size, entry.name
        elif entry.kind == "bundled":  # the project's own (test_default_base.py checks its hash)
            assert entry.path is not None and entry.path.stat().st_size == entry.size and entry.sha256, entry.name
        else:  # IPT: Google Drive only, no published hash
            assert entry.kind == "manual" and entry.file and entry.sha256 is None and entry.size is None, entry.name
        if entry.heads:  # renamed single-task files must offer a head for every task they list
            for task in entry.tasks:
                head_for(TASKS[task], dict.fromkeys(entry.heads))
    for entry in manifest.adapters.values():  # shipped adapters: test_default_base.py loads each one
        assert entry.kind == "bundled" and entry.base in manifest.bases and entry.task in TASKS, entry.name
        assert entry.method and entry.license and entry.description and entry.sha256, entry.name


def test_shipped_manifest_hashes_and_sizes_match_the_real_files(shared: Path) -> None:
    manifest = default_manifest()
    for name, filename in SHARED_FILES.items():
        file = shared / "weights" / filename
        assert manifest.bases[name].size == file.stat().st_size, name
        assert manifest.bases[name].sha256 == sha256_file(file), name


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ('colour = "red"', "unknown key"),
        ('sha256 = "abc"', "sha256"),
        ("size = -3", "size"),
        ("manual = true", "file"),
        ('path = "x.safetensors"', "bundled_sha256, bundled_size, license_file"),
        ('bundled_size = 3', "only a shipped published file"),
    ],
)
def test_manifest_rejects_malformed_entries(tmp_path: Path, extra: str, problem: str) -> None:
    with pytest.raises(ManifestError, match=problem):
        write_manifest(tmp_path, base_entry("bad", "https://example.org/x.pth", extra=extra))


def test_manifest_rejects_unknown_tasks_missing_keys_and_orphan_adapters(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="unknown task"):
        write_manifest(tmp_path, base_entry("bad", "https://example.org/x.pth").replace('"sr2"', '"sr5"'))
    with pytest.raises(ManifestError, match="lacks.*license"):
        write_manifest(tmp_path, base_entry("bad", "https://example.org/x.pth").replace('license = "MIT"', ""))
    orphan = '[adapters.a]\nbase = "nope"\ntask = "sr2"\nsource = "bundled"\npath = "a.safetensors"\nlicense = "MIT"\ndescription = "d"\n'
    with pytest.raises(ManifestError, match="not in \\[bases\\]"):
        write_manifest(tmp_path, orphan)


def test_unknown_names_suggest_the_closest_ones() -> None:
    with pytest.raises(UnknownNameError, match="did you mean emt-x4"):
        default_manifest().base("emt-4x")
    with pytest.raises(UnknownNameError, match="emt-x2"):
        load_base("emtx2")


def test_bundled_base_and_shipped_adapter_entries(tmp_path: Path, tiny_emt_file: Path) -> None:
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    shutil.copy(tiny_emt_file, bundled / "tiny.pth")
    adapter = ('[adapters.tiny-sr2]\nbase = "tiny"\ntask = "sr2"\nsource = "bundled"\npath = "tiny-sr2.safetensors"\n'
               f'sha256 = "{"0" * 64}"\nlicense = "MIT"\ndescription = "an adapter"\n')
    manifest = write_manifest(tmp_path, base_entry("tiny", "bundled", extra='path = "tiny.pth"\nheads = ["upscale"]') + adapter, bundled)
    entry = manifest.bases["tiny"]
    assert entry.kind == "bundled" and entry.path == bundled / "tiny.pth"
    base = load_base("tiny", manifest)
    assert base.sha256 == sha256_file(tiny_emt_file) and list(base.descriptor.heads) == ["upscale"]
    assert fetch("tiny", manifest) == bundled / "tiny.pth"  # nothing to download
    shipped = manifest.adapters["tiny-sr2"]
    assert (shipped.base, shipped.task, shipped.method, shipped.path) == ("tiny", "sr2", "adaptir", bundled / "tiny-sr2.safetensors")


# --- fetch ---

def test_fetch_downloads_verifies_converts_and_loads(
    tmp_path: Path, tiny_emt_file: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ADAPTIR_OFFLINE")
    data = tiny_emt_file.read_bytes()
    url = server.serve("/tiny.pth", data)
    sha = hashlib.sha256(data).hexdigest()
    manifest = write_manifest(tmp_path, base_entry("tiny", url, sha256=sha, size=len(data), extra='heads = ["upscale"]'))

    path = fetch("tiny", manifest)

    assert path == cached_model("tiny") and leftovers() == ["tiny.safetensors"]
    assert server.requests == ["/tiny.pth"]
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata == {"format": "pt", "adaptir.name": "tiny", "adaptir.source_sha256": sha,
                        "adaptir.architecture": "emt", "adaptir.tensors_sha256": metadata["adaptir.tensors_sha256"]}
    base = load_base("tiny", manifest)
    assert base.sha256 == sha == load_base_file(tiny_emt_file).sha256  # one identity, .pth or cache
    assert base.descriptor.heads["upscale"].scale == 2
    original = torch.load(tiny_emt_file, weights_only=True)["params"]
    loaded = base.module.state_dict()
    assert all(torch.equal(original[key], loaded[key]) for key in original)


def test_fetch_works_from_a_file_url(tmp_path: Path, tiny_emt_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADAPTIR_OFFLINE")
    manifest = write_manifest(tmp_path, base_entry("tiny", tiny_emt_file.as_uri(), sha256=sha256_file(tiny_emt_file)))
    assert fetch("tiny", manifest).is_file() and leftovers() == ["tiny.safetensors"]


@pytest.mark.parametrize(
    ("served", "declared", "message"),
    [
        (lambda data: bytes(b ^ 0xFF for b in data[:64]) + data[64:], None, "corrupted"),  # same size, wrong bytes
        (lambda data: data[: len(data) // 2], None, "manifest expects"),  # short file, honest length
        (lambda data: data[: len(data) // 2], "full", "stopped after"),  # connection closed early
    ],
    ids=["corrupted", "short-file", "cut-connection"],
)
def test_bad_downloads_leave_no_cache_entry_and_no_temp_file(
    tmp_path: Path, tiny_emt_file: Path, server: Server, monkeypatch: pytest.MonkeyPatch, served, declared, message: str
) -> None:
    monkeypatch.delenv("ADAPTIR_OFFLINE")
    data = tiny_emt_file.read_bytes()
    url = server.serve("/tiny.pth", served(data), len(data) if declared else None)
    manifest = write_manifest(tmp_path, base_entry("tiny", url, sha256=hashlib.sha256(data).hexdigest(), size=len(data)))
    with pytest.raises(WeightsError, match=message):
        fetch("tiny", manifest)
    assert leftovers() == []


def test_failed_connection_is_reported_with_a_hint(tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADAPTIR_OFFLINE")
    manifest = write_manifest(tmp_path, base_entry("tiny", server.url + "/missing.pth"))
    with pytest.raises(WeightsError, match="(?s)failed: Not Found.*Hint: .*adaptir models import tiny"):
        fetch("tiny", manifest)
    assert leftovers() == []


def test_offline_mode_refuses_without_connecting(tmp_path: Path, tiny_emt_file: Path, server: Server) -> None:
    url = server.serve("/tiny.pth", tiny_emt_file.read_bytes())
    manifest = write_manifest(tmp_path, base_entry("tiny", url))
    with pytest.raises(WeightsError, match="(?s)offline.*Hint: ADAPTIR_OFFLINE is set"):
        fetch("tiny", manifest)
    with pytest.raises(WeightsError, match="(?s)not installed.*ADAPTIR_OFFLINE"):
        load_base("tiny", manifest)
    assert server.requests == [] and leftovers() == []


def test_missing_bases_say_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WeightsError, match="(?s)download IPT_pretrain.pt by hand.*adaptir models import ipt"):
        load_base("ipt")
    with pytest.raises(WeightsError, match="(?s)download IPT_derain.pt by hand"):
        fetch("ipt-derain")
    monkeypatch.delenv("ADAPTIR_OFFLINE")
    manifest = write_manifest(tmp_path, base_entry("tiny", "https://example.org/t.pth"))
    with pytest.raises(WeightsError, match="run `adaptir models fetch tiny`"):
        load_base("tiny", manifest)
    with pytest.raises(WeightsError, match="weights file not found"):
        load_base("no/such/file.pth")


# --- import ---

def test_import_refuses_a_file_that_is_not_the_published_one(tmp_path: Path, tiny_emt_file: Path) -> None:
    manifest = write_manifest(
        tmp_path,
        base_entry("tiny", "https://example.org/t.pth", sha256="1" * 64)
        + base_entry("tiny-lmlt", "https://example.org/l.pth").replace('"emt"', '"lmlt"')
        + base_entry("tiny-two-heads", "https://example.org/h.pth", extra='heads = ["a", "b"]'),
    )
    with pytest.raises(WeightsError, match=f"(?s)its sha256 is {sha256_file(tiny_emt_file)}.*expects {'1' * 64}.*--force"):
        import_weights("tiny", tiny_emt_file, manifest=manifest)
    with pytest.raises(WeightsError, match="holds emt weights, but tiny-lmlt is a lmlt base"):
        import_weights("tiny-lmlt", tiny_emt_file, manifest=manifest)
    with pytest.raises(WeightsError, match="names 2 head"):
        import_weights("tiny-two-heads", tiny_emt_file, manifest=manifest)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a plain tensor checkpoint"):
        import_weights("tiny", garbage, force=True, manifest=manifest)
    assert leftovers() == []
    assert import_weights("tiny", tiny_emt_file, force=True, manifest=manifest) == cached_model("tiny")


# --- `adaptir models` ---

def run(*args: str):
    """Invoke `models ...` on a root app that mounts the `models` sub-app, as `adaptir` does."""
    root = typer.Typer()
    root.add_typer(models_app, name="models")
    root.callback()(lambda: None)
    return CliRunner().invoke(root, ["models", *args])


def test_cli_list_json() -> None:
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["emt-x2"]["status"] == "bundled" and rows["emt-x2"]["size"] == 3135945  # the published file's
    assert rows["emt-x2"]["default_for"] == ["sr2"] and rows["lmlt-tiny-x2"]["default_for"] == []
    assert rows["ipt"]["download"] == "manual" and "derain" in rows["ipt"]["tasks"]


def test_cli_bundled_emt_x2_info_and_path_and_nothing_to_import(shared: Path) -> None:
    file = shared / "weights" / "EMT_LSR_x2.pth"
    shipped = run("import", "emt-x2", str(file))
    assert shipped.exit_code == 1 and "ships with adaptir" in shipped.stderr
    assert run("path", "emt-x2").stdout.strip() == str(default_manifest().bases["emt-x2"].path)
    info = json.loads(run("info", "emt-x2", "--json").stdout)
    assert info["sha256"] == default_manifest().bases["emt-x2"].sha256 == sha256_file(file)
    assert info["heads"] == {"sr2": {"scale": 2, "index": 0}} and info["architecture"] == "emt"


def test_import_of_a_real_published_file(shared: Path, tmp_path: Path) -> None:
    file = shared / "weights" / "EMT_LSR_x2.pth"
    manifest = write_manifest(tmp_path, base_entry("emt-two", "https://example.org/x2.pth", sha256=sha256_file(file))
                              + base_entry("emt-other", "https://example.org/x3.pth", sha256="2" * 64))
    with pytest.raises(WeightsError, match="--force"):
        import_weights("emt-other", file, manifest=manifest)
    assert import_weights("emt-two", file, manifest=manifest) == cached_model("emt-two")
    assert load_base("emt-two", manifest).sha256 == sha256_file(file)


def test_cli_errors() -> None:
    unknown = run("fetch", "emt-x9")
    assert unknown.exit_code == 2 and "did you mean" in unknown.stderr
    manual = run("fetch", "ipt", "ipt-sr2", "emt-x2")  # both IPT files fail, the batch reports each
    assert manual.exit_code == 1
    assert "adaptir models import ipt" in manual.stderr and "adaptir models import ipt-sr2" in manual.stderr
    assert "2 of 3" in manual.stderr and "emt-x2: already installed" in manual.stderr and manual.stdout == ""
    missing = run("path", "ipt")
    assert missing.exit_code == 1 and "Hint:" in missing.stderr


def test_damaged_and_unsafe_weight_files_are_bad_files_not_bugs(tmp_path: Path) -> None:
    from PIL import Image
    from safetensors.torch import save_file

    from adaptir_cli.cli.app import app

    whole = tmp_path / "whole.safetensors"
    save_file({"w": torch.zeros(256)}, str(whole))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[:300])
    unsafe = tmp_path / "module.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, unsafe)  # a pickled module, not tensors
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    expected = {cut: "is not a complete .safetensors file", unsafe: "is not a plain tensor checkpoint",
                garbage: "is not a plain tensor checkpoint"}
    for file, message in expected.items():
        result = CliRunner().invoke(app, ["restore", str(image), str(tmp_path / "out"), "--task", "sr2", "--base", str(file)])
        assert result.exit_code == 1 and message in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 2 and lines[1].startswith("Hint:"), result.stderr
        assert "report it" not in result.stderr and "weights_only" not in result.stderr


# --- identity: a converted file keeps its original's sha256 only with its own tensors ---

def test_a_converted_file_with_altered_tensors_does_not_pass_as_its_original(
    tmp_path: Path, tiny_emt_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file, save_file

    import adaptir_cli.bases as bases

    manifest = write_manifest(tmp_path, base_entry("tiny", "https://example.org/t.pth", sha256=sha256_file(tiny_emt_file)))
    genuine = import_weights("tiny", tiny_emt_file, manifest=manifest)
    with safe_open(str(genuine), framework="pt") as handle:
        metadata = handle.metadata()
    tampered = tmp_path / "tampered.safetensors"
    state = load_file(str(genuine))
    first = sorted(state)[0]
    state[first] = state[first] + 1  # same keys and shapes, same recorded sha256: other weights
    save_file(state, str(tampered), metadata=metadata)
    with pytest.raises(WeightsError, match="(?s)its tensors are not the ones converted.*Hint: install it again"):
        load_base(tampered)

    hashed = []
    real_digest = bases.tensor_digest
    monkeypatch.setattr(bases, "tensor_digest", lambda s: hashed.append(1) or real_digest(s))
    assert load_base("tiny", manifest).sha256 == sha256_file(tiny_emt_file) and len(hashed) == 1
    reads = []
    real_read = verification._entries
    monkeypatch.setattr(verification, "_entries", lambda: reads.append(1) or real_read())
    assert load_base("tiny", manifest).sha256 == sha256_file(tiny_emt_file) and len(hashed) == 1  # checked once
    assert len(reads) == 1, "a file checked before costs one read of the ledger"
    # A changed modification time (an edit in place): checked again.
    os.utime(genuine, ns=(genuine.stat().st_atime_ns, genuine.stat().st_mtime_ns + 10**9))
    load_base("tiny", manifest)
    assert len(hashed) == 2


def test_every_shipped_converted_base_records_its_tensors_digest() -> None:
    for entry in default_manifest().bases.values():
        if entry.kind == "bundled" and entry.source != "bundled":
            with safe_open(str(entry.path), framework="pt") as handle:
                metadata = handle.metadata()
            assert metadata["adaptir.source_sha256"] == entry.sha256 and len(metadata["adaptir.tensors_sha256"]) == 64
