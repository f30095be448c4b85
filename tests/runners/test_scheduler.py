"""Scheduler policy against a fake step function (no model): admission, budgets, abort, queue, fairness."""

from __future__ import annotations

import threading

import pytest

from api.errors import BUSY_RETRY_AFTER_S, rule_for
from runners.errors import QueueFullError, RequestAbortedError
from runners.sampling import SamplingParams
from runners.scheduler import EngineLoop, FinishReason, GenerationRequest, Scheduler, SchedulerOutput, StepTokens

EOS = 3


class FakeRunner:
    """Says id 1000+k for the k-th id of a request, and EOS once it made ``prompt_ids[0]`` ids."""

    def __init__(self) -> None:
        self.plans: list[SchedulerOutput] = []
        self.made: dict[str, int] = {}

    def execute(self, plan: SchedulerOutput) -> StepTokens:
        self.plans.append(plan)
        ids: list[int] = []
        who: list[str] = []
        active = list(plan.decodes) + [c.request for c in plan.prefills if c.last]
        for request in active:
            k = self.made.get(request.request_id, 0)
            self.made[request.request_id] = k + 1
            who.append(request.request_id)
            ids.append(EOS if k >= request.prompt_ids[0] else 1000 + k)
        return StepTokens(who, ids)

    def release(self) -> None:
        pass


def req(name: str, says: int, prompt_len: int = 4, budget: int = 100) -> GenerationRequest:
    return GenerationRequest(name, [says] + [7] * (prompt_len - 1), SamplingParams(max_new_tokens=budget))


def run(scheduler: Scheduler, runner: FakeRunner, steps: int = 1000) -> None:
    loop = EngineLoop(runner, scheduler)
    for _ in range(steps):
        if not scheduler.has_work():
            return
        loop.step()
    raise AssertionError("requests did not finish")


def test_requests_finish_at_eos_or_at_their_budget_with_their_own_ids() -> None:
    scheduler, runner = Scheduler(max_batch=4, eos_id=EOS), FakeRunner()
    a, b = req("a", says=5), req("b", says=50, budget=8)
    scheduler.add_request(a)
    scheduler.add_request(b)
    run(scheduler, runner)
    assert a.output == [1000 + k for k in range(5)] and a.finish_reason is FinishReason.EOS
    assert b.output == [1000 + k for k in range(8)] and b.finish_reason is FinishReason.LENGTH
    assert scheduler.get_request_counts() == (0, 0)


def test_running_requests_decode_together_in_one_step() -> None:
    scheduler, runner = Scheduler(max_batch=8, eos_id=EOS), FakeRunner()
    for k in range(6):
        scheduler.add_request(req(f"r{k}", says=10))
    run(scheduler, runner)
    assert max(len(p.decodes) for p in runner.plans) == 6
    assert scheduler.make_stats().generated_tokens == 60


def test_admission_is_first_come_first_served_and_bounded_by_max_batch() -> None:
    scheduler, runner = Scheduler(max_batch=2, eos_id=EOS), FakeRunner()
    order = [req(f"r{k}", says=3) for k in range(5)]
    for r in order:
        scheduler.add_request(r)
    first = scheduler.schedule()
    assert [c.request.request_id for c in first.prefills] == ["r0", "r1"]
    assert scheduler.get_request_counts() == (2, 3)
    runner.execute(first)
    run(scheduler, runner)
    finished = sorted(order, key=lambda r: r.finished_at)
    assert [r.request_id for r in finished][:2] == ["r0", "r1"]
    assert all(len(p.decodes) <= 2 for p in runner.plans)


def test_a_full_queue_is_refused_at_once() -> None:
    scheduler = Scheduler(max_batch=1, max_queue=2, eos_id=EOS)
    for k in range(3):  # one gets the slot at the next step, two wait
        scheduler.add_request(req(f"r{k}", says=3))
    with pytest.raises(QueueFullError) as err:
        scheduler.add_request(req("late", says=3))
    assert "EDITX_MAX_QUEUE" in str(err.value)
    rule = rule_for(err.value)
    assert rule.status == 503 and rule.retry_after_s == BUSY_RETRY_AFTER_S


def test_an_abort_takes_effect_within_one_step_and_frees_the_slot() -> None:
    scheduler, runner = Scheduler(max_batch=1, eos_id=EOS), FakeRunner()
    long, queued = req("long", says=1000, budget=1000), req("queued", says=2)
    scheduler.add_request(long)
    scheduler.add_request(queued)
    loop = EngineLoop(runner, scheduler)
    for _ in range(5):
        loop.step()
    made_before = runner.made["long"]
    scheduler.abort_request("long")
    loop.step()  # the abort is applied; the queued request takes the slot in the same step
    assert long.finish_reason is FinishReason.ABORTED
    assert runner.made["long"] == made_before  # nothing more was computed for it
    assert scheduler.make_stats().aborted == 1
    with pytest.raises(RequestAbortedError):
        list(long.tokens())
    run(scheduler, runner)
    assert queued.output == [1000, 1001]


def test_a_long_prompt_is_prefilled_in_chunks_while_others_keep_decoding() -> None:
    scheduler, runner = Scheduler(max_batch=4, prefill_tokens_per_step=16, eos_id=EOS), FakeRunner()
    short = req("short", says=40)
    scheduler.add_request(short)
    loop = EngineLoop(runner, scheduler)
    loop.step()
    scheduler.add_request(req("huge", says=2, prompt_len=160))
    for _ in range(10):
        loop.step()
    chunks = [c for p in runner.plans for c in p.prefills if c.request.request_id == "huge"]
    assert [c.end - c.start for c in chunks] == [16] * 10  # never more than the per-step budget
    assert all(any(r.request_id == "short" for r in p.decodes) for p in runner.plans[1:])  # never stalled


def test_a_long_request_does_not_starve_short_ones() -> None:
    scheduler, runner = Scheduler(max_batch=2, eos_id=EOS), FakeRunner()
    long = req("long", says=500, budget=500)
    scheduler.add_request(long)
    shorts = [req(f"s{k}", says=5) for k in range(6)]
    for s in shorts:
        scheduler.add_request(s)
    run(scheduler, runner)
    assert all(s.finished_at < long.finished_at for s in shorts)


def test_the_loop_thread_serves_requests_submitted_from_many_threads() -> None:
    scheduler, runner = Scheduler(max_batch=4, eos_id=EOS), FakeRunner()
    loop = EngineLoop(runner, scheduler).start()
    results: dict[str, list[int]] = {}

    def client(k: int) -> None:
        r = loop.submit(req(f"c{k}", says=k + 1))
        results[r.request_id] = [i for ids in r.tokens() for i in ids]

    threads = [threading.Thread(target=client, args=(k,)) for k in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    loop.stop()
    assert {k: len(v) for k, v in results.items()} == {f"c{k}": k + 1 for k in range(10)}


def test_ids_read_back_every_few_steps_change_nothing() -> None:
    outputs = []
    for sync_every in (1, 4):
        scheduler, runner = Scheduler(max_batch=4, eos_id=EOS), FakeRunner()
        rs = [req(f"r{k}", says=3 + 2 * k, budget=9) for k in range(4)]
        for r in rs:
            scheduler.add_request(r)
        loop = EngineLoop(runner, scheduler, sync_every=sync_every)
        while scheduler.has_work():
            loop.step()
        outputs.append([(r.output, r.finish_reason) for r in rs])
    assert outputs[0] == outputs[1]


def test_a_failing_step_ends_its_requests_with_an_error_and_the_loop_goes_on() -> None:
    class Broken(FakeRunner):
        def execute(self, plan: SchedulerOutput) -> StepTokens:
            raise RuntimeError("out of memory")

    scheduler = Scheduler(max_batch=2, eos_id=EOS)
    loop = EngineLoop(Broken(), scheduler).start()
    r = loop.submit(req("x", says=3))
    with pytest.raises(RuntimeError, match="out of memory"):
        list(r.tokens())
    assert loop.alive
    loop.stop()


class PrefixRunner(FakeRunner):
    """FakeRunner with a prefix store: a chunk that ends at a request's head stores that head."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: set[bytes] = set()

    def execute(self, plan: SchedulerOutput) -> StepTokens:
        for request in plan.prefix_hits:
            assert request.prefix_key in self.stored  # copied only what is there
        for chunk in plan.prefills:
            if chunk.completes_prefix:
                self.stored.add(chunk.request.prefix_key)
        return super().execute(plan)


def voice_req(name: str, says: int, head: int = 30, text: int = 6, voice: int = 7) -> GenerationRequest:
    """A prompt of ``head`` ids of one voice (its system turn) and ``text`` ids of its own."""
    ids = [says] + [voice] * (head - 1) + [100 + len(name) + k for k in range(text)]
    return GenerationRequest(name, ids, SamplingParams(max_new_tokens=100), prefix_len=head)


def chunks_of(runner: FakeRunner, name: str) -> list[tuple[int, int]]:
    return [(c.start, c.end) for p in runner.plans for c in p.prefills if c.request.request_id == name]


def test_a_shared_prompt_head_is_prefilled_once_and_copied_for_the_others() -> None:
    runner = PrefixRunner()
    scheduler = Scheduler(max_batch=8, eos_id=EOS, prefix_cached=runner.stored.__contains__)
    rs = [voice_req(f"r{k}", says=4) for k in range(5)]
    for r in rs:
        scheduler.add_request(r)
    run(scheduler, runner)
    # the first computes the head as a chunk of its own, then its text; the others wait one
    # step for the head, copy it and prefill only their text
    assert chunks_of(runner, "r0") == [(0, 30), (30, 36)]
    for k in range(1, 5):
        assert chunks_of(runner, f"r{k}") == [(30, 36)]
    stats = scheduler.make_stats()
    assert (stats.prefix_hits, stats.prefill_tokens_reused) == (4, 4 * 30)
    assert all(r.output == [1000 + k for k in range(4)] for r in rs)


def test_prompts_with_other_heads_and_runs_without_a_store_prefill_whole() -> None:
    runner = PrefixRunner()
    scheduler = Scheduler(max_batch=8, eos_id=EOS, prefix_cached=runner.stored.__contains__)
    scheduler.add_request(voice_req("a", says=2, voice=7))
    scheduler.add_request(voice_req("b", says=2, voice=8))  # another voice: nothing to share
    run(scheduler, runner)
    assert chunks_of(runner, "a") == chunks_of(runner, "b") == [(0, 30), (30, 36)]
    assert scheduler.make_stats().prefix_hits == 0

    plain, plain_runner = Scheduler(max_batch=8, eos_id=EOS), FakeRunner()  # no store: today's chunks
    plain.add_request(voice_req("c", says=2))
    plain.add_request(voice_req("d", says=2))
    run(plain, plain_runner)
    assert chunks_of(plain_runner, "c") == chunks_of(plain_runner, "d") == [(0, 36)]


def test_the_head_is_its_own_chunk_under_any_budget_and_a_waiter_takes_over_from_an_aborted_owner() -> None:
    runner = PrefixRunner()
    scheduler = Scheduler(max_batch=4, prefill_tokens_per_step=16, eos_id=EOS,
                          prefix_cached=runner.stored.__contains__)
    owner, waiter = voice_req("owner", says=3), voice_req("waiter", says=3)
    scheduler.add_request(owner)
    scheduler.add_request(waiter)
    loop = EngineLoop(runner, scheduler)
    loop.step()  # owner: head [0, 16); waiter: waits for the head
    assert chunks_of(runner, "owner") == [(0, 16)] and chunks_of(runner, "waiter") == []
    scheduler.abort_request("owner")
    run(scheduler, runner)
    assert owner.finish_reason is FinishReason.ABORTED
    # the waiter computed the head itself: chunks end at the head's end and within 16 ids a step
    assert chunks_of(runner, "waiter") == [(0, 16), (16, 30), (30, 32), (32, 36)]
    assert waiter.output == [1000, 1001, 1002]
    late = voice_req("late", says=3)  # the same head (the first id is part of it)
    scheduler.add_request(late)
    run(scheduler, runner)
    assert chunks_of(runner, "late") == [(30, 36)] and scheduler.make_stats().prefix_hits == 1
