"""The shortened loop of notebook 03 gives the former loop's numbers: same losses, weights and history, seed for seed.

Both loops run here, on the same seed and data, so the numbers compared are computed, never typed.
"""

from __future__ import annotations

import pytest
import torch
from former_train_loop import former_train
from test_train import TinyLM, _loaders

from course_utils.ground import machine
from course_utils.training.train import TrainConfig, TrainExtras, TrainState, lm_loss, train


def _run(loop, cfg: TrainConfig, seed: int = 3, **kwargs):
    torch.manual_seed(seed)
    model = TinyLM()
    evaluations: list[int] = []
    state, optimizer = loop(model, *_loaders(), cfg, on_eval=lambda s: evaluations.append(s.step), **kwargs)
    return model, state, evaluations


def _same(a, b) -> None:
    (model_a, state_a, evals_a), (model_b, state_b, evals_b) = a, b
    history_a, history_b = state_a.history.as_dict(), state_b.history.as_dict()
    history_a.pop("seconds"), history_b.pop("seconds")
    assert history_a == history_b  # the losses, exactly
    assert (state_a.step, state_a.tokens_seen, evals_a) == (state_b.step, state_b.tokens_seen, evals_b)
    for (name, p), q in zip(model_a.named_parameters(), model_b.parameters(), strict=True):
        assert torch.equal(p, q), name


CONFIGS = {
    "plain": TrainConfig(max_steps=12, lr=3e-3, warmup_steps=3, eval_every=4, eval_batches=2),
    "accumulation, no clipping": TrainConfig(max_steps=9, warmup_steps=2, grad_accum_steps=3, grad_clip=None,
                                             eval_every=5, eval_batches=1),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_same_numbers_as_the_former_loop(name):
    cfg = CONFIGS[name]
    now = _run(train, cfg, progress=False)
    _same(now, _run(former_train, cfg))
    assert now[1].history.train_loss[-1] < now[1].history.train_loss[0]  # it did train


def test_same_numbers_with_the_precision_recipe():
    precision = machine.pick_precision("cpu")
    cfg = CONFIGS["plain"]
    _same(_run(train, cfg, precision=precision, progress=False),
          _run(former_train, cfg, autocast_dtype=precision.autocast_dtype, grad_scaler=None))


def test_same_numbers_with_another_loss_and_a_cut_run():
    def smoothed(model, inputs, targets):  # a stand-in for distillation's loss: anything but plain cross-entropy
        return lm_loss(model, inputs, targets) + 0.1 * model(inputs).float().pow(2).mean()

    cfg = CONFIGS["plain"]
    _same(_run(train, cfg, progress=False, extras=TrainExtras(loss_fn=smoothed, stop_at=7)),
          _run(former_train, cfg, loss_fn=smoothed, stop_at=7))


def test_same_numbers_when_resumed():
    cfg = CONFIGS["plain"]
    results = []
    for loop, options in ((train, {"progress": False}), (former_train, {})):
        torch.manual_seed(5)
        model = TinyLM()
        half, optimizer = loop(model, *_loaders(), cfg, **options, **(
            {"extras": TrainExtras(stop_at=5)} if loop is train else {"stop_at": 5}))
        state = TrainState(half.step, half.tokens_seen, half.history)
        done, _ = loop(model, *_loaders(), cfg, state=state, optimizer=optimizer, **options)
        results.append((model, done, []))
    _same(*results)


def test_the_lesson_loop_fits_one_screen():
    import inspect

    lines = inspect.getsource(train).splitlines()
    assert len(lines) <= 50, f"train() is {len(lines)} lines: keep what only some runs need in TrainExtras"
    assert len(inspect.signature(train).parameters) <= 11
