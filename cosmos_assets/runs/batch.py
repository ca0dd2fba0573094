"""Batched generation: several prompts that can share a model load run as one invocation of the model.

Each prompt stays its own run: its own record (``outputs/.runs/<run_id>.json``, pointing at the shared invocation
through :class:`~cosmos_assets.runs.spec_used.BatchRef`), ``outputs/<prompt>/`` with ``spec_used.json`` and a
``run.log`` excerpt, and its history line. Per prompt, before anything is sent: skipped when done
(:mod:`cosmos_assets.runs.skip`), run alone (and so adopted, :mod:`cosmos_assets.runs.adopt`) when an earlier
attempt was left behind. The others are grouped by the backend's :meth:`~cosmos_assets.models.base.ModelBackend.
batch_key` (control set and per-invocation settings); a group also never holds two prompts with the same text,
as the text is what ties an output to its prompt (:mod:`cosmos_assets.runs.batch_map`). A group of one runs as
a plain invocation. A guardrail block that ends the invocation early leaves later items unrun: a follow-up
invocation runs them. The invocation's GPU time is split equally over the items it ran (one load, run for all).
The shared invocation's own files stay in ``outputs/.batches/<batch_id>/`` (JSONL, log, ``batch.json``).
Plain Python, no Dagster.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from cosmos_assets.layout import ProjectLayout
from cosmos_assets.machines.base import Machine
from cosmos_assets.models.base import ModelBackend
from cosmos_assets.models.registry import backend_named
from cosmos_assets.runs.adopt import earlier_attempt
from cosmos_assets.runs.batch_members import BatchOptions, Member, PromptOutcome
from cosmos_assets.runs.batch_run import run_batch
from cosmos_assets.runs.ids import batch_id as batch_id_of
from cosmos_assets.runs.ids import batch_run_id, new_run_id
from cosmos_assets.runs.plan import StagePlan, plan_generation
from cosmos_assets.runs.record_store import RunStore
from cosmos_assets.runs.runner import run_stage
from cosmos_assets.runs.skip import decide
from cosmos_assets.runs.stage import (
    StageResult,
    clean_staging,
    planned_record,
    say,
)


def alone(
    options: BatchOptions,
    layout: ProjectLayout,
    machine: Machine,
    backend: ModelBackend,
    make_plan: Callable[[str], StagePlan],
    run_id: str,
) -> StageResult:
    """One prompt by the runner's own path (skip, adopt, run, its retries; a batch its earlier attempt was part of is
    collected as that batch)."""

    def plan_member(model: str, prompt: str, rid: str) -> StagePlan:  # a member of an orphaned batch
        return plan_generation(
            layout,
            backend_named(model),
            prompt,
            run_id=rid,
            dagster_run_id=options.dagster_run_id,
            videos_subdir=options.videos_subdir,
            num_gpus=options.num_gpus,
        )

    return run_stage(layout, machine, backend, make_plan, run_id, options, plan_member=plan_member)


def group_for_batches(members: list[Member]) -> list[list[Member]]:
    """Prompts with the same backend and batch key together, in request order; a text seen twice in a group opens
    another group (an output is tied to its prompt by its text). Unbatchable prompts are groups of one."""
    groups: list[list[Member]] = []
    by_key: dict[tuple[str, str], list[list[Member]]] = {}
    for member in members:
        key = member.backend.batch_key(member.item) if member.backend.can_batch else None
        if key is None:
            groups.append([member])
            continue
        candidates = by_key.setdefault((member.backend.name, key), [])
        home = next(
            (
                g
                for g in candidates
                if (member.text is None or member.text not in {m.text for m in g})
                and member.backend.shares_batch_with(member.item, [m.item for m in g])
            ),
            None,
        )
        if home is None:
            home = []
            candidates.append(home)
            groups.append(home)
        home.append(member)
    return groups


def run_generations(
    layout: ProjectLayout,
    prompts: list[str],
    backend_for: Callable[[str], ModelBackend],
    machine_for: Callable[[ModelBackend], Machine],
    options: BatchOptions,
    now: datetime | None = None,
) -> dict[str, PromptOutcome]:
    """Generate every prompt, sharing invocations where :func:`group_for_batches` allows; one outcome per prompt.

    A prompt's failure (its spec, its block, its invocation) is its outcome's error; a termination (BaseException)
    is recorded for every prompt still open and raised."""
    base = new_run_id(now or datetime.now(UTC))
    log = options.log
    store = RunStore(layout.runs_dir, warn=lambda line: say(log, f"[cosmos-assets] warning: {line}"))
    outcomes: dict[str, PromptOutcome] = {}
    waiting: list[Member] = []
    for number, prompt in enumerate(dict.fromkeys(prompts)):
        outcome = outcomes[prompt] = PromptOutcome(prompt)
        try:
            backend = backend_for(prompt)
            machine = machine_for(backend)

            def make_plan(rid: str, backend: ModelBackend = backend, prompt: str = prompt) -> StagePlan:
                return plan_generation(
                    layout,
                    backend,
                    prompt,
                    run_id=rid,
                    dagster_run_id=options.dagster_run_id,
                    videos_subdir=options.videos_subdir,
                    num_gpus=options.num_gpus,
                )

            run_id = batch_run_id(base, number)
            plan = make_plan(run_id)
            record = planned_record(layout, machine, backend, plan)
            record.gpu_price_per_hour = options.gpu_price_per_hour
            decision = decide(store, layout.root, record, force=options.force)
            if decision.skip or earlier_attempt(store, record) is not None:
                # Done, or left behind by an earlier attempt: the one-prompt path skips it, or adopts that run.
                clean_staging(plan.effective_spec.parent, plan)
                outcome.result = alone(options, layout, machine, backend, make_plan, run_id)
                continue
            say(log, f"[cosmos-assets] generate of {prompt}: {decision.reason}")
            waiting.append(Member(prompt, backend, plan, record, make_plan))
        except Exception as error:  # noqa: BLE001 - this prompt fails, the others go on
            outcome.error = error
    for number, group in enumerate(group_for_batches(waiting)):
        machine = machine_for(group[0].backend)
        if len(group) == 1:  # nothing to share a load with: a plain invocation, by the runner's own path
            member = group[0]
            clean_staging(member.plan.effective_spec.parent, member.plan)
            try:
                outcomes[member.prompt].result = alone(
                    options, layout, machine, member.backend, member.make_plan, member.record.run_id
                )
            except Exception as error:  # noqa: BLE001
                outcomes[member.prompt].error = error
        else:
            run_batch(layout, machine, group, batch_id_of(base, number), options, outcomes)
    return outcomes
