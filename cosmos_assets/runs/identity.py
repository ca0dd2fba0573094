"""What makes two runs the same run, beyond the spec and inputs: the image's ID on the host, the staged program's hash,
and the checkpoint revision the model resolved (issue 20; docs/runs.md, "Exactly the same run").

The image's ID and the program's hash are known before a run and are part of its inputs digest (a rebuilt tag is new
work); the checkpoint revision is read from the host's Hugging Face cache after the run (the model downloads ``main``
as it starts), unless the prompt pins it, when the host is refused before the run unless its cache resolves to it.
Plain Python, no Dagster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from cosmos_assets.files import sha256_file
from cosmos_assets.machines.base import Machine
from cosmos_assets.machines.job import HostNotReadyError, InferenceJob, LogLine, StagedFile
from cosmos_assets.runs.record import RunRecord


def program_sha256(files: Iterable[StagedFile]) -> str | None:
    """One sha256 over the staged program files (their remote names and contents); None when there are none."""
    items = sorted(files, key=lambda f: f.remote)
    if not items:
        return None
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{item.remote}\0{sha256_file(item.local)}\0".encode())
    return digest.hexdigest()


def short(image_id: str | None) -> str:
    """``sha256:0123456789ab`` (docker's short form), or ``(none)``."""
    return image_id[:19] if image_id else "(none)"


def pin_problem(job: InferenceJob, found: dict[str, str], where: str) -> str | None:
    """Why the host cannot run ``job`` on its pinned checkpoints (None: every pin is what the cache resolves to)."""
    for repo, wanted in job.invocation.pinned_revisions.items():
        have = found.get(repo)
        if have != wanted:
            now = f"resolves main to {have}" if have else "has no readable refs/main for it"
            return (
                f"checkpoint_revision pins {repo} at {wanted} but the Hugging Face cache on {where} {now}: "
                "Cosmos 3 loads its checkpoint and processor by the `main` revision (no revision flag), so a pin "
                "holds only where the cache resolves main to it (the run then goes offline, HF_HUB_OFFLINE=1). "
                "Fix: remove the pin to run on what the host has, or run on a host whose cache holds that revision"
            )
    return None


def after_preflight(machine: Machine, job: InferenceJob, records: list[RunRecord], log: LogLine) -> None:
    """The image's ID once the preflight made sure the image is there (it may have been built just now), and the
    checkpoint pins held against the host's cache; :class:`HostNotReadyError` naming the pin otherwise."""
    image_id = machine.image_id()
    for record in records:
        if image_id is not None and record.image_id not in (None, image_id):
            log(
                f"[cosmos-assets] image {record.image} changed on {machine.label} since the run was planned: "
                f"{short(record.image_id)} -> {short(image_id)}"
            )
        record.image_id = image_id or record.image_id
    if job.invocation.pinned_revisions:
        problem = pin_problem(job, machine.checkpoint_revisions(job), machine.label)
        if problem is not None:
            raise HostNotReadyError(problem)


def note_revisions(machine: Machine, job: InferenceJob, records: list[RunRecord]) -> None:
    """The checkpoint revisions the run resolved, read from the host's cache right after it ran."""
    if not job.invocation.revision_files:
        return
    found = machine.checkpoint_revisions(job)
    for record in records:
        record.checkpoint_revisions = found
