"""Scheduler policy against a fake step function (no model): admission, budgets, abort, queue, fairness."""

from __future__ import annotations

import threading

import pytest

from api.errors import BUSY_RETRY_AFTER_S, rule_for
from runners.errors import QueueFullError, RequestAbortedError
from runners.models.step1.sampling import SamplingParams
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


# ----------------------------------------------------------------------------- jobs
def pieces(name: str, n: int, says: int = 3) -> list[GenerationRequest]:
    """The ``n`` sentences of one long text, each its own request (``says`` ids each)."""
    return [req(f"{name}.{k}", says=says) for k in range(n)]


def start_order(runner: FakeRunner) -> list[str]:
    """Request ids in the order they got a slot (their first prefill chunk)."""
    seen: dict[str, None] = {}
    for plan in runner.plans:
        for chunk in plan.prefills:
            seen.setdefault(chunk.request.request_id, None)
    return list(seen)


def step_until_done(scheduler: Scheduler, loop: EngineLoop, watched: list[GenerationRequest],
                    limit: int = 10_000) -> dict[str, int]:
    """Step until nothing is left; the step at which each watched request finished."""
    finished_at: dict[str, int] = {}
    for step in range(limit):
        if not scheduler.has_work():
            return finished_at
        loop.step()
        for r in watched:
            if r.finished and r.request_id not in finished_at:
                finished_at[r.request_id] = step
    raise AssertionError("requests did not finish")


@pytest.mark.parametrize("max_batch, max_queue", [(16, 64), (2, 1)])
def test_a_text_of_more_sentences_than_slots_and_queue_hold_is_admitted_and_spoken_in_order(
        max_batch: int, max_queue: int) -> None:
    # the documented maximum (10,000 characters) splits into ~218 sentences: as single requests they
    # overflowed max_batch + max_queue and were refused forever
    scheduler, runner = Scheduler(max_batch=max_batch, max_queue=max_queue, eos_id=EOS), FakeRunner()
    sentences = pieces("long", 218)
    job = scheduler.add_job(sentences)
    order = step_until_done(scheduler, EngineLoop(runner, scheduler), sentences)
    names = [r.request_id for r in sentences]
    assert start_order(runner) == names  # sentence k gets a slot before sentence k+1
    assert sorted(names, key=lambda n: order[n]) == names  # equal lengths: they also end in order
    assert all(r.output == [1000, 1001, 1002] and r.finish_reason is FinishReason.EOS for r in sentences)
    assert max(len(p.decodes) for p in runner.plans) == max_batch  # alone, the job fills every slot
    assert job.finished and (job.pieces_done, job.pieces_total) == (218, 218)
    assert scheduler.get_request_counts() == (0, 0) and scheduler.get_job_counts() == (0, 0)


def test_a_job_takes_one_queue_place_however_many_pieces_it_has() -> None:
    scheduler = Scheduler(max_batch=2, max_queue=3, eos_id=EOS)
    loop = EngineLoop(FakeRunner(), scheduler)
    scheduler.add_job(pieces("a", 218))
    loop.step()  # two sentences get the slots, 216 wait
    stats = scheduler.make_stats()
    assert (stats.running, stats.waiting, stats.queue_places_used) == (2, 216, 1)
    assert (stats.jobs_running, stats.jobs_waiting, stats.job_pieces_waiting) == (1, 0, 216)
    scheduler.add_job(pieces("b", 100))  # the second place
    scheduler.add_request(req("short", says=3))  # the third
    stats = scheduler.make_stats()
    assert (stats.queue_places_used, stats.jobs_running, stats.jobs_waiting) == (3, 1, 1)
    with pytest.raises(QueueFullError, match="EDITX_MAX_QUEUE=3"):
        scheduler.add_request(req("one too many", says=3))


def test_a_full_queue_refuses_a_whole_job_and_leaves_none_of_it_behind() -> None:
    scheduler, runner = Scheduler(max_batch=1, max_queue=1, eos_id=EOS), FakeRunner()
    scheduler.add_request(req("a", says=3))  # takes the slot at the next step
    scheduler.add_request(req("b", says=3))  # takes the one queue place
    sentences = pieces("long", 10)
    with pytest.raises(QueueFullError) as err:
        scheduler.add_job(sentences)
    assert rule_for(err.value).status == 503
    assert scheduler.get_request_counts() == (0, 2) and scheduler.get_job_counts() == (0, 0)
    run(scheduler, runner)
    assert start_order(runner) == ["a", "b"]  # no sentence of the refused text ever ran
    assert not any(r.finished or r.output for r in sentences)
    job = scheduler.add_job(sentences)  # the retry once there is room gets the whole text
    run(scheduler, runner)
    assert job.pieces_done == 10 and all(r.output == [1000, 1001, 1002] for r in sentences)


def test_short_requests_sent_while_a_long_text_runs_are_not_starved() -> None:
    scheduler, runner = Scheduler(max_batch=16, max_queue=64, eos_id=EOS), FakeRunner()
    loop = EngineLoop(runner, scheduler)
    sentences = pieces("long", 218, says=20)  # 21 steps a sentence: ~14 rounds of 16 slots
    job = scheduler.add_job(sentences)
    for _ in range(30):
        loop.step()
    shorts = [req(f"s{k}", says=5) for k in range(5)]
    for s in shorts:
        scheduler.add_request(s)
    order = step_until_done(scheduler, loop, [*shorts, *sentences])
    # each short request waits at most for one sentence to end (21 steps), then speaks its 5 ids
    assert all(order[s.request_id] <= 21 + 6 + 1 for s in shorts), {s.request_id: order[s.request_id] for s in shorts}
    assert order[sentences[-1].request_id] > 10 * max(order[s.request_id] for s in shorts)
    assert job.pieces_done == 218 and all(s.output == [1000 + k for k in range(5)] for s in shorts)
    assert start_order(runner)[:16] == [r.request_id for r in sentences[:16]]  # alone it had every slot


def test_two_long_texts_share_the_slots_instead_of_one_waiting_for_the_other() -> None:
    scheduler, runner = Scheduler(max_batch=4, eos_id=EOS), FakeRunner()
    loop = EngineLoop(runner, scheduler)
    first, second = pieces("first", 40, says=5), pieces("second", 40, says=5)
    scheduler.add_job(first)
    loop.step()
    scheduler.add_job(second)
    order = step_until_done(scheduler, loop, [*first, *second])
    # the second text starts as soon as a sentence of the first ends and both end close together
    assert order[second[0].request_id] <= 2 * 6
    assert abs(order[first[-1].request_id] - order[second[-1].request_id]) <= 2 * 6
    assert all(len(p.decodes) <= 4 for p in runner.plans)


def test_more_long_texts_than_slots_take_turns() -> None:
    scheduler, runner = Scheduler(max_batch=2, eos_id=EOS), FakeRunner()
    texts = [pieces(name, 10, says=5) for name in ("a", "b", "c")]
    for sentences in texts:
        scheduler.add_job(sentences)
    order = step_until_done(scheduler, EngineLoop(runner, scheduler), [r for t in texts for r in t])
    # two slots, three texts: the third gets the slot the first frees, not the first's next sentence
    assert start_order(runner)[:4] == ["a.0", "b.0", "c.0", "a.1"]
    ends = sorted(order[t[-1].request_id] for t in texts)
    assert ends[-1] - ends[0] <= 2 * 6  # all three end within a sentence or two of each other


def test_aborting_a_job_frees_its_slots_within_one_step_and_its_queued_pieces_never_start() -> None:
    scheduler, runner = Scheduler(max_batch=4, eos_id=EOS), FakeRunner()
    loop = EngineLoop(runner, scheduler)
    sentences = pieces("long", 20, says=50)
    job = scheduler.add_job(sentences)
    for _ in range(5):
        loop.step()
    queued = req("queued", says=2)
    scheduler.add_request(queued)
    made_before = dict(runner.made)
    scheduler.abort_job(job.job_id)
    loop.step()  # the abort is applied; the queued request takes a freed slot in the same step
    assert all(r.finish_reason is FinishReason.ABORTED for r in sentences)
    assert {k: v for k, v in runner.made.items() if k.startswith("long")} == made_before  # nothing more computed
    assert [c.request.request_id for c in runner.plans[-1].prefills] == ["queued"]
    assert scheduler.get_request_counts() == (1, 0) and scheduler.get_job_counts() == (0, 0)
    assert job.finished and job.pieces_done == 0
    with pytest.raises(RequestAbortedError):
        list(job.tokens())
    run(scheduler, runner)
    assert start_order(runner) == ["long.0", "long.1", "long.2", "long.3", "queued"]  # the other 16 never ran
    assert queued.output == [1000, 1001]
    assert scheduler.make_stats().aborted == 20


def test_a_piece_aborted_alone_is_skipped_and_the_rest_of_its_job_goes_on() -> None:
    scheduler, runner = Scheduler(max_batch=1, eos_id=EOS), FakeRunner()
    sentences = pieces("long", 4)
    job = scheduler.add_job(sentences)
    scheduler.abort_request("long.2")
    run(scheduler, runner)
    assert start_order(runner) == ["long.0", "long.1", "long.3"]
    assert sentences[2].finish_reason is FinishReason.ABORTED
    assert job.finished and job.pieces_done == 3


def test_job_progress_counts_up_to_the_total() -> None:
    scheduler, runner = Scheduler(max_batch=2, eos_id=EOS), FakeRunner()
    loop = EngineLoop(runner, scheduler)
    job = scheduler.add_job([req(f"p{k}", says=2 + k % 3) for k in range(9)])
    seen = [job.pieces_done]
    while scheduler.has_work():
        loop.step()
        seen.append(job.pieces_done)
    assert seen == sorted(seen) and seen[0] == 0 and seen[-1] == 9
    assert len(set(seen)) >= 6  # it moves piece by piece, not 0 then 9
    assert job.progress == 1.0 and job.finished


def test_the_loop_thread_serves_a_job_in_piece_order_and_aborts_one() -> None:
    scheduler, runner = Scheduler(max_batch=4, max_queue=1, eos_id=EOS), FakeRunner()
    loop = EngineLoop(runner, scheduler).start()
    try:
        job = loop.submit_job([req(f"t{k}", says=1 + k % 4) for k in range(30)])
        got = list(job.tokens())
        assert [k for k, _ in got] == sorted(k for k, _ in got)  # piece k's ids all before piece k+1's
        assert [i for _, ids in got for i in ids] == [1000 + i for k in range(30) for i in range(1 + k % 4)]
        assert job.wait(5) and job.pieces_done == 30

        endless = loop.submit_job([req(f"e{k}", says=10**6, budget=10**6) for k in range(10)])
        first = next(endless.tokens())
        assert first[0] == 0
        loop.abort_job(endless.job_id)
        assert endless.wait(5) and endless.pieces_done == 0
        with pytest.raises(RequestAbortedError):
            list(endless.tokens())
        assert scheduler.get_request_counts() == (0, 0)
    finally:
        loop.stop()


def test_the_pieces_of_a_job_share_their_voice_head() -> None:
    runner = PrefixRunner()
    scheduler = Scheduler(max_batch=8, eos_id=EOS, prefix_cached=runner.stored.__contains__)
    sentences = [voice_req(f"v{k}", says=3) for k in range(6)]
    scheduler.add_job(sentences)
    run(scheduler, runner)
    assert chunks_of(runner, "v0") == [(0, 30), (30, 36)]
    assert all(chunks_of(runner, f"v{k}") == [(30, 36)] for k in range(1, 6))
    assert scheduler.make_stats().prefix_hits == 5


def test_a_failing_step_ends_every_piece_of_a_job_and_the_loop_goes_idle() -> None:
    class Broken(FakeRunner):
        def execute(self, plan: SchedulerOutput) -> StepTokens:
            raise RuntimeError("out of memory")

    scheduler = Scheduler(max_batch=2, eos_id=EOS)
    loop = EngineLoop(Broken(), scheduler).start()
    try:
        job = loop.submit_job(pieces("long", 50))
        with pytest.raises(RuntimeError, match="out of memory"):
            list(job.tokens())
        assert job.wait(5) and job.pieces_done == 0
        assert all(r.finish_reason is FinishReason.ERROR for r in job.requests)  # the queued ones too
        assert not scheduler.has_work() and scheduler.get_job_counts() == (0, 0)
        assert loop.alive
    finally:
        loop.stop()
