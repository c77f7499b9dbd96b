"""`verify-export` as a recipient runs it: given the folder `export --out` wrote or the package
file, with a private key protected by a passphrase (from a file, or typed at a prompt)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from pipeline.cli import main as cli
from pipeline.core.config import Settings
from pipeline.core.resources import Resources
from tests.conftest import ROOT
from tests.test_export import PERIOD, _ingested, _two_people

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def exported(
    res: Resources, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path, Path]:
    """(the folder `export --out` wrote, the protected private key, the seal public key)."""
    env = {"CDR_STORE": settings.store, "CDR_KEYRING": settings.keyring,
           "CDR_DATA_DOCS": str(tmp_path / "docs")}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    pk, _ = _two_people(_ingested(res, tmp_path))
    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "authority.pem").write_bytes(public)
    protected = tmp_path / "recipient.pem"
    protected.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        )
    )
    request = {
        "case": "VX-1", "authority": "FIA", "legal_basis": "PECA s.31", "requested_by": "a",
        "approved_by": "b", "identifiers": [pk["e164"]], "date_from": PERIOD[0],
        "date_to": PERIOD[1], "recipient_key": "authority.pem",
    }  # fmt: skip
    (tmp_path / "request.json").write_text(json.dumps(request))
    out = tmp_path / "out"
    assert cli(["export", "--request", str(tmp_path / "request.json"), "--out", str(out)]) == 0
    seal = tmp_path / "seal.pem"
    seal.write_text(res.keyring.public_key_pem())
    return out, protected, seal


def test_the_folder_export_wrote_and_a_passphrase_file_verify(
    exported: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, key, seal = exported
    (tmp_path / "pass.txt").write_text(PASSPHRASE + "\n")
    args = ["--private-key", str(key), "--seal-public-key", str(seal)]
    capsys.readouterr()
    assert cli(["verify-export", str(out), *args, "--passphrase-file", str(tmp_path / "pass.txt")]) == 0  # fmt: skip
    assert "VERDICT: VERIFIED (case VX-1)" in capsys.readouterr().out
    (package,) = out.glob("*.cdrx")
    assert cli(["verify-export", str(package), *args, "--passphrase-file", str(tmp_path / "pass.txt")]) == 0  # fmt: skip

    (tmp_path / "wrong.txt").write_text("not it\n")
    assert cli(["verify-export", str(out), *args, "--passphrase-file", str(tmp_path / "wrong.txt")]) == 1  # fmt: skip
    assert "wrong passphrase" in capsys.readouterr().out
    (out / "second.cdrx").write_bytes(package.read_bytes())
    assert cli(["verify-export", str(out), *args]) == 2
    assert "holds 2 .cdrx packages" in capsys.readouterr().err


def test_without_a_terminal_a_protected_key_needs_its_passphrase_file(
    exported: tuple[Path, Path, Path],
) -> None:
    out, key, seal = exported
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "verify-export", str(out), "--private-key", str(key),
         "--seal-public-key", str(seal)],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "error: the private key is protected by a passphrase: give --passphrase-file"
    )


def test_on_a_terminal_the_passphrase_is_asked_for(exported: tuple[Path, Path, Path]) -> None:
    out, key, seal = exported
    args = [sys.executable, "-m", "pipeline", "verify-export", str(out), "--private-key",
            str(key), "--seal-public-key", str(seal)]  # fmt: skip
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of its own, as a person at a shell has
        os.chdir(ROOT)
        os.execv(sys.executable, args)
    seen = b""
    while b"passphrase of the private key:" not in seen:
        seen += os.read(fd, 1024)
    os.write(fd, PASSPHRASE.encode() + b"\n")
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")[-2000:]
    assert b"VERDICT: VERIFIED (case VX-1)" in seen
    assert PASSPHRASE.encode() not in seen  # not echoed
