"""BatchLoop, the continuous-batching policy shared by the Scheduler thread and the engine process."""

from __future__ import annotations

from tencentpretrain.generation import GenerationConfig
from tencentpretrain.generation.engine import Engine
from tencentpretrain.serving.scheduler import BatchLoop
from tests.generation.scripted import tiny_model, tiny_tokenizer


def make_loop(rows: int = 1) -> BatchLoop:
    tok = tiny_tokenizer()
    return BatchLoop(Engine(tiny_model(tok.vocab_size), tok, max_batch_size=rows, max_length=64), max_queue=4)


def enqueue(loop: BatchLoop, rid: int, max_new_tokens: int) -> None:
    config = GenerationConfig(max_new_tokens=max_new_tokens, stop_at_eos=False)
    loop.enqueue(rid, loop.engine.new_request([5, 6, 7], config))


def run(loop: BatchLoop) -> list[tuple[int, str | None]]:
    """Step until idle; (request id, finish reason) of every event."""
    out = []
    while loop.busy:
        out += [(rid, event.finish_reason) for rid, event in loop.step()]
    return out


def test_each_request_finishes_once_even_when_prefill_and_step_both_report_it():
    loop = make_loop(rows=2)
    enqueue(loop, 1, 2)  # the first token comes from the prefill, the second (and last) from the same step
    enqueue(loop, 2, 1)  # finished by the prefill alone
    finishes = [(rid, reason) for rid, reason in run(loop) if reason]
    assert sorted(finishes) == [(1, "length"), (2, "length")]
    assert not loop.active and not loop.waiting


def test_cancelled_requests_end_cancelled_whether_waiting_or_running():
    loop = make_loop(rows=1)
    enqueue(loop, 1, 50)
    enqueue(loop, 2, 50)
    loop.step()  # 1 runs, 2 waits for the row
    loop.cancel(1)
    loop.cancel(2)
    finishes = [(rid, reason) for rid, reason in run(loop) if reason]
    assert sorted(finishes) == [(1, "cancelled"), (2, "cancelled")]
    assert loop.engine.free_rows == 1


def test_a_failed_step_ends_every_request_with_an_error():
    loop = make_loop(rows=1)
    enqueue(loop, 1, 50)
    enqueue(loop, 2, 50)
    loop.step()
    loop.engine.model.logits = None  # the next step raises
    try:
        loop.step()
    except TypeError:
        events = loop.fail_all()
    assert sorted((rid, event.finish_reason) for rid, event in events) == [(1, "error"), (2, "error")]
    assert not loop.busy and loop.engine.free_rows == 1
