"""A one-prompt run that holds a free host takes the waiting prompts that can share its model load (issue 19).

The prompt of the run (``own``) is planned first: when its last success did the same work, or an earlier attempt was
left behind, it goes the one-prompt way alone (skip, adopt) and takes nobody. Otherwise each prompt of ``company``
(found waiting for this host by :mod:`cosmos_assets.runs.gather`) is planned as its own run would plan it; it is
taken only when it has work to do (not done, nothing left behind: its own run deals with those) and falls in the
same invocation as ``own`` (:func:`~cosmos_assets.runs.batch.group_for_batches`: same backend and batch key, a
distinct text). The invocation is :func:`~cosmos_assets.runs.batch_run.run_batch`'s: every prompt keeps its own record,
folder, history line and mapping rules; a taken prompt's record names the Dagster run it was taken from
(``batch.taken_for``), so that run, when it reaches the host, finds its work done by the skip digest and reports it
as its own (docs/batching.md). Works for both GPU stages: ``planner`` plans a generation or an upscale.
Plain Python, no Dagster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.base import Machine
from cosmos_assets.machines.job import LogLine
from cosmos_assets.models.base import ModelBackend
from cosmos_assets.runs.adopt import earlier_attempt
from cosmos_assets.runs.batch import alone as run_alone
from cosmos_assets.runs.batch import group_for_batches
from cosmos_assets.runs.batch_members import BatchOptions, Member, PromptOutcome
from cosmos_assets.runs.batch_run import run_batch
from cosmos_assets.runs.ids import batch_id as batch_id_of
from cosmos_assets.runs.ids import batch_run_id, new_run_id
from cosmos_assets.runs.plan import StagePlan
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.skip import decide
from cosmos_assets.runs.stage import StageResult, clean_staging, planned_record, say

Planner = Callable[[ModelBackend, str, str], StagePlan]
"""(backend, prompt, run id) -> the stage's plan for that prompt."""


def run_with_company(
    layout: ProjectLayout,
    own: str,
    find_company: Callable[[], Mapping[str, str]],
    backend_for: Callable[[str], ModelBackend],
    machine: Machine,
    options: BatchOptions,
    planner: Planner,
    stage: str = "generate",
    now: datetime | None = None,
) -> dict[str, PromptOutcome]:
    """``own`` run on ``machine``, with as many of the waiting prompts (``find_company()``: prompt -> the Dagster run
    it waits in; asked only once ``own`` has work to do) as can share its invocation. Returns ``own``'s outcome and
    one for each prompt taken; a prompt not taken has none."""
    log = options.log
    base = new_run_id(now or datetime.now(UTC))
    suffix = "" if stage == "generate" else f"_{stage}"
    store = RunStore(layout.runs_dir, warn=lambda line: say(log, f"[cosmos-assets] warning: {line}"))
    outcomes: dict[str, PromptOutcome] = {own: PromptOutcome(own)}
    own_backend = backend_for(own)

    def plan_maker(backend: ModelBackend, prompt: str) -> Callable[[str], StagePlan]:
        return lambda rid: planner(backend, prompt, rid)

    def alone() -> dict[str, PromptOutcome]:
        try:
            outcomes[own].result = run_alone(
                options, layout, machine, own_backend, plan_maker(own_backend, own), base + suffix
            )
        except Exception as error:  # noqa: BLE001 - the caller raises it as the step's failure
            outcomes[own].error = error
        return {own: outcomes[own]}

    if options.force or not own_backend.can_batch:
        return alone()
    own_member = _member(layout, machine, own_backend, own, batch_run_id(base, 0) + suffix, planner, options)
    if own_member is None or _has_no_new_work(layout, store, own_member, options.force):
        _clean(own_member)
        return alone()
    company = find_company()
    if not company:
        _clean(own_member)
        return alone()
    members = [own_member]
    for number, (prompt, waits_in) in enumerate(company.items(), start=1):
        try:
            backend = backend_for(prompt)
            if backend.name != own_backend.name:
                continue
            member = _member(layout, machine, backend, prompt, batch_run_id(base, number) + suffix, planner, options)
        except Exception as error:  # noqa: BLE001 - its own run will say it; this run goes on without it
            say(log, f"[cosmos-assets] {prompt} (waiting in run {waits_in}) not taken: {str(error).splitlines()[0]}")
            continue
        if member is None:
            continue
        if _has_no_new_work(layout, store, member, options.force):
            _clean(member)
            continue
        member.taken_for = waits_in
        members.append(member)
    group = next(g for g in group_for_batches(members) if own_member in g)
    for member in members:
        if member not in group:
            _clean(member)
    if len(group) == 1:
        say(log, f"[cosmos-assets] {stage} of {own}: no waiting prompt can share its invocation; it runs alone")
        return alone()
    taken = [m for m in group if m is not own_member]
    say(
        log,
        f"[cosmos-assets] {stage} of {own} takes {len(taken)} waiting prompt(s) into its invocation: "
        + ", ".join(f"{m.prompt} (run {m.taken_for})" for m in taken),
    )
    for member in taken:
        outcomes[member.prompt] = PromptOutcome(member.prompt)
    run_batch(layout, machine, group, batch_id_of(base, 0), options, outcomes)
    return {m.prompt: outcomes[m.prompt] for m in group}


def own_result(outcomes: dict[str, PromptOutcome], own: str, log: LogLine) -> StageResult:
    """The result of ``own`` (its error raised); the prompts taken with it are logged, each reported later by its own
    run, which finds its work done."""
    for prompt, outcome in outcomes.items():
        if prompt != own:
            why = str(outcome.error).splitlines()[0] if outcome.error is not None and str(outcome.error) else "?"
            say(
                log,
                f"[cosmos-assets] taken prompt {prompt}: {'done' if outcome.result is not None else 'failed: ' + why} "
                "(its own run reports it)",
            )
    if outcomes[own].error is not None:
        raise outcomes[own].error
    result = outcomes[own].result
    assert result is not None
    return result


def _member(
    layout: ProjectLayout,
    machine: Machine,
    backend: ModelBackend,
    prompt: str,
    run_id: str,
    planner: Planner,
    options: BatchOptions,
) -> Member | None:
    plan = planner(backend, prompt, run_id)
    if plan.spec is None:
        return None
    record = planned_record(layout, machine, backend, plan)
    record.gpu_price_per_hour = options.gpu_price_per_hour
    return Member(prompt, backend, plan, record, lambda rid: planner(backend, prompt, rid))


def _has_no_new_work(layout: ProjectLayout, store: RunStore, member: Member, force: bool) -> bool:
    """Done already (the skip decides), or left behind by an earlier attempt (the one-prompt path adopts it)."""
    return (
        decide(store, layout.root, member.record, force=force).skip or earlier_attempt(store, member.record) is not None
    )


def _clean(member: Member | None) -> None:
    if member is not None:
        clean_staging(member.plan.effective_spec.parent, member.plan)
