"""course_utils.serving.batching: both loops give greedy's tokens; continuous batching admits and retires per step."""

import torch
from transformers import AutoModelForCausalLM

from course_utils.ground import paths
from course_utils.serving import batching, workload


def _counting_decoder(batches):
    def decode(batch):
        batches.append(len(batch))
        return [ids[-1] + 1 for ids in batch]
    return decode


def test_scheduler_step_admits_only_arrived_requests_and_retires_finished():
    waiting = [workload.Request(0, 0.0, (5,), 1), workload.Request(1, 0.0, (7,), 3), workload.Request(2, 9.0, (1,), 1)]
    running, batches = [], []
    retired = batching.scheduler_step(waiting, running, 0.0, 4, _counting_decoder(batches))
    assert [s.request.request_id for s in retired] == [0] and retired[0].generated == [6]
    assert [s.request.request_id for s in running] == [1] and [r.request_id for r in waiting] == [2]
    assert batches == [2]


def test_scheduler_step_respects_max_batch():
    waiting = [workload.Request(i, 0.0, (i,), 5) for i in range(5)]
    running = []
    batching.scheduler_step(waiting, running, 0.0, 2, _counting_decoder([]))
    assert len(running) == 2 and len(waiting) == 3


def test_static_and_continuous_give_greedy_generate_tokens():
    model = AutoModelForCausalLM.from_pretrained(paths.data_dir() / "models" / "tiny-llama").eval()
    requests = workload.poisson_workload(6, 50.0, prompt_lengths=(3, 9), output_lengths=(1, 6),
                                         vocab=model.config.vocab_size, seed=2)
    decode = batching.greedy_decoder(model)
    timings, continuous = batching.serve_continuous(requests, decode, 3)
    _, static = batching.serve_static(requests, decode, 3)
    for r in requests:
        out = model.generate(torch.tensor([r.prompt_ids]), max_new_tokens=r.max_new_tokens, do_sample=False,
                             min_new_tokens=r.max_new_tokens, pad_token_id=0)
        assert continuous[r.request_id] == static[r.request_id] == out[0, len(r.prompt_ids):].tolist()
    assert all(t.first_token_s >= t.arrival_s and t.finish_s >= t.first_token_s for t in timings)
