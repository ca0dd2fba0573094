"""Secrets appear in no file on either side and in no process's argv: a real generation over the real sshd with an
encrypted SSH key (its passphrase read by name from the environment) and an HF token, under a Dagster instance with
its own DAGSTER_HOME (SQLite event log, run storage and the local compute log manager's captured stdout/stderr).

Every file under DAGSTER_HOME, the project root and the host's folder is searched for the secret bytes, and every
process's /proc/<pid>/cmdline is sampled while the run goes. tests/integration/test_ssh_host.py checks the token in
its own run logs and spec_used.json; this adds the key passphrase, Dagster's own storage and argv.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dagster._core.instance.ref import InstanceRef

from cosmos_assets.defs.assets import ALL_ASSETS
from cosmos_assets.defs.partitions import PROMPTS
from cosmos_assets.defs.resources.project import ProjectResource
from tests.faults.test_hostile_names import HOSTILE_PROMPT, assert_no_canary
from tests.integration.test_ssh_host import REPO, FakeRemote, dockerfile_only_host, make_host
from tests.project_factory import make_project

pytestmark = pytest.mark.integration

TOKEN = "hf_faults_" + uuid.uuid4().hex
PASSPHRASE = "pp-faults-" + uuid.uuid4().hex
PASSPHRASE_ENV = "COSMOS_FAULTS_KEY_PASSPHRASE"
SECRETS = {"HF token": TOKEN.encode(), "key passphrase": PASSPHRASE.encode()}


def _encrypted_key(path: Path, authorized_keys: Path) -> None:
    """An ed25519 key in OpenSSH format encrypted with PASSPHRASE (made in-process: no passphrase on any argv),
    authorized on the test sshd."""
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        )
    )
    path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    with open(authorized_keys, "a") as handle:
        handle.write(public.decode() + " cosmos-faults-encrypted\n")


class ArgvSampler:
    """Reads every process's argv from /proc, over and over, until stopped; keeps those holding a secret."""

    def __init__(self, secrets: dict[str, bytes] = SECRETS) -> None:
        self.secrets = secrets
        self.leaks: list[tuple[int, str]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                        argv = handle.read()
                except OSError:
                    continue
                for what, secret in self.secrets.items():
                    if secret in argv:
                        self.leaks.append((int(entry.name), what))
            self.samples += 1
            self._stop.wait(0.02)

    def __enter__(self) -> ArgvSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def files_holding_secrets(*roots: Path, secrets: dict[str, bytes] = SECRETS) -> list[tuple[str, str]]:
    """(path, which secret) for every regular file under ``roots`` whose bytes hold a secret (SQLite files included)."""
    found = []
    for root in roots:
        for dirpath, _, filenames in os.walk(root):
            for name in filenames:
                path = Path(dirpath) / name
                if path.is_symlink() or not path.is_file():
                    continue
                data = path.read_bytes()
                found += [(str(path), what) for what, secret in secrets.items() if secret in data]
    return found


def test_the_leak_detectors_find_a_leak(tmp_path: Path) -> None:
    """The searches below can fail: a marker on a child's argv and inside a SQLite file is found."""
    import sqlite3
    import subprocess
    import sys

    marker = {"marker": ("leak-" + uuid.uuid4().hex).encode()}
    with sqlite3.connect(tmp_path / "events.db") as db:
        db.execute("create table t (v text)")
        db.execute("insert into t values (?)", (marker["marker"].decode(),))
    assert files_holding_secrets(tmp_path, secrets=marker) == [(str(tmp_path / "events.db"), "marker")]
    with ArgvSampler(marker) as sampler:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)", marker["marker"].decode()])
        child.wait()
    assert child.pid in [pid for pid, _ in sampler.leaks]


@pytest.fixture()
def fresh_remote(test_image: str) -> Iterator[FakeRemote]:
    """A host folder with only a Dockerfile (the preview dry run: no checkout, no checkpoints), owned by a plain uid."""
    base, remote_dir = dockerfile_only_host("cosmos-faults-secrets-")
    yield FakeRemote(
        base=base,
        remote_dir=remote_dir,
        checkpoints=base / "checkpoints",
        image=f"cosmos-faults-secrets:{uuid.uuid4().hex[:8]}",
        no_ssh_config=base / "no-ssh-config",
    )
    shutil.rmtree(base, ignore_errors=True)


def test_no_secret_in_any_file_on_either_side_nor_in_any_argv(
    sshd, fresh_remote: FakeRemote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(tmp_path / "project", shot="shot_a", prompt=HOSTILE_PROMPT)
    key = tmp_path / "keys" / "id_encrypted"
    key.parent.mkdir()
    _encrypted_key(key, Path(sshd.key_path).parent / "authorized_keys")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    host = make_host(sshd, fresh_remote, model="preview", ssh_key=str(key), key_passphrase_env=PASSPHRASE_ENV)
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    try:
        instance.add_dynamic_partitions(PROMPTS.name, [HOSTILE_PROMPT])
        with ArgvSampler() as sampler:
            result = dg.materialize(
                ALL_ASSETS,
                selection=["prompt_specs", "generated_videos"],
                partition_key=HOSTILE_PROMPT,
                instance=instance,
                raise_on_error=False,
                resources={"project": ProjectResource(root=str(project.root)), "gpu_host": host},
            )
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        compute_logs = instance.compute_log_manager
        assert compute_logs.__class__.__name__ == "LocalComputeLogManager"
    finally:
        host.close()
        instance.dispose()

    used = json.loads((project.output_dir(HOSTILE_PROMPT) / "spec_used.json").read_text())
    assert used["prompt"] == HOSTILE_PROMPT and used["container"]["runtime"] == "docker"
    assert used["environment"].get("HF_TOKEN") == "***"  # the token was handed to the run (and shown redacted)
    captured = [p for p in home.rglob("*") if p.is_file() and p.suffix in (".out", ".err", ".complete")]
    assert captured, f"no compute log was captured under {home}"
    assert any((home / "history").rglob("*.db")) or any(home.rglob("*.db")), "no SQLite storage under DAGSTER_HOME"
    assert sampler.samples >= 3  # /proc was read while the run went
    assert sampler.leaks == [], f"secrets on a process's argv: {sampler.leaks[:5]}"
    assert files_holding_secrets(home, project.root, fresh_remote.base) == []
    assert_no_canary(project.root, fresh_remote.base)
