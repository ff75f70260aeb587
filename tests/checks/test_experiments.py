"""Experiments: probes record every run within their budget; each experiment check holds an answer to the table.

The checks' logic is tested on made-up probes (instant); each real probe is run once (slow: it trains or loads the
tiny models) to show that it measures what its notebook says, within ranges that hold on any CPU.
"""

from __future__ import annotations

import math

import pytest

from course_utils.checks import CheckFailed, experiments, nb00, nb01, nb02, nb03, nb04, nb05, nb06, nb07
from course_utils.checks.experiments import BadSetting, BudgetExceeded, Probe


def _probe(name, settings, curve, result, budget=8):
    return Probe(name, settings, curve, result, budget)


# --- the probe ----------------------------------------------------------------------------------------------------


def test_a_probe_records_each_run_once_and_enforces_its_budget():
    calls = []
    probe = _probe("loss_after", ("lr",), lambda lr: calls.append(lr) or {"validation loss": lr * 2}, "validation loss",
                   budget=2)
    assert probe(0.5) == 1.0 and probe(lr=0.5) == 1.0 and calls == [0.5]  # asking again costs nothing
    assert probe(0.25) == 0.5
    with pytest.raises(BudgetExceeded, match="allows 2 runs"):
        probe(0.125)
    assert probe.values("lr") == [0.5, 0.25] and probe.measured(lr=0.25)["validation loss"] == 0.5
    assert "| 0.25 |" in probe.table() and "seconds" not in probe.table()
    with pytest.raises(TypeError, match="takes lr"):
        probe(1, 2)


def test_a_probe_without_a_result_key_returns_every_measured_value():
    probe = _probe("save_as", ("dtype",), lambda dtype: {"bytes": 10, "agreement": 1.0}, None)
    assert probe("float16") == {"bytes": 10, "agreement": 1.0}


@pytest.mark.parametrize(("make", "bad", "message"), [
    (experiments.learning_rate_probe, (0.0,), "lr must be a number"),
    (experiments.position_loss_probe, (33,), "multiple of 32"),
    (experiments.kv_cache_probe, (0,), "context must be"),
    (experiments.save_dtype_probe, ("int8",), "dtype must be one of"),
    (experiments.distillation_probe, (1.0, -1), "seed must be"),
    (experiments.latency_probe, (0.0,), "rate must be a number"),
])
def test_probes_refuse_settings_they_cannot_measure(make, bad, message):
    with pytest.raises(BadSetting, match=message):
        make()(*bad)


# --- the checks, on made-up measurements --------------------------------------------------------------------------


def _cache(offset=0, per_token=2048):
    return _probe("cache_bytes", ("context",), lambda context: {"bytes": offset + per_token * context}, "bytes")


def test_kv_cache_experiment():
    def slope(cache_bytes):
        sizes = {c: cache_bytes(c) for c in (16, 64, 256)}
        return (sizes[256] - sizes[16]) / 240

    nb00.kv_cache_experiment(slope, _cache(1000, 7))
    for wrong, message in [
        (lambda cache_bytes: (cache_bytes(16), cache_bytes(32))[1] / 32, "at least three"),
        (lambda cache_bytes: [cache_bytes(c) for c in (16, 20, 24)] and 7.0, "at least four times"),
        (lambda cache_bytes: [cache_bytes(c) for c in (16, 64, 256)] and 14.0, "a factor 2"),
        (lambda cache_bytes: [cache_bytes(c) for c in (16, 64, 256)] and 2048, "expected about 7"),
        (lambda cache_bytes: 2048, "without calling cache_bytes"),
    ]:
        with pytest.raises(CheckFailed, match=message):
            nb00.kv_cache_experiment(wrong, _cache(1000, 7))


_DTYPES = {"float32": {"bytes": 4000, "max_logit_error": 0.0, "agreement": 1.0},
           "bfloat16": {"bytes": 2001, "max_logit_error": 0.01, "agreement": 1.0},
           "float16": {"bytes": 2000, "max_logit_error": 0.5, "agreement": 0.9}}


def _dtypes():
    return _probe("save_as", ("dtype",), lambda dtype: dict(_DTYPES[dtype]), None, budget=3)


def test_save_dtype_experiment():
    def by_rule(save_as):
        rows = {d: save_as(d) for d in ("float32", "bfloat16", "float16")}
        ok = [d for d, r in rows.items() if r["agreement"] == 1.0 and r["bytes"] <= 0.55 * rows["float32"]["bytes"]]
        return min(ok, key=lambda d: rows[d]["max_logit_error"]) if ok else "float32"

    nb01.save_dtype_experiment(by_rule, _dtypes())
    assert nb01.dtype_by_the_rule([{"dtype": "float32", **_DTYPES["float32"]}]) == "float32"
    with pytest.raises(CheckFailed, match="measure float32"):
        nb01.save_dtype_experiment(lambda save_as: save_as("float32") and "float32", _dtypes())
    with pytest.raises(CheckFailed, match="measure float32"):
        nb01.save_dtype_experiment(lambda save_as: [save_as(d) for d in ("bfloat16", "float16")] and "bfloat16",
                                   _dtypes())
    with pytest.raises(CheckFailed, match="your table gives 'bfloat16'"):
        nb01.save_dtype_experiment(lambda save_as: [save_as(d) for d in _DTYPES] and "float16", _dtypes())


def test_save_dtype_experiment_accepts_the_students_choice_of_dtypes():
    def by_rule_on(dtypes):
        def choose(save_as):
            return nb01.dtype_by_the_rule([{"dtype": d, **save_as(d)} for d in dtypes])
        return choose

    nb01.save_dtype_experiment(by_rule_on(("float32", "float16")), _dtypes())  # float16 disagrees: float32
    nb01.save_dtype_experiment(by_rule_on(("bfloat16", "float32")), _dtypes())
    with pytest.raises(CheckFailed, match="your table gives 'float32'"):  # the answer of a table it did not make
        nb01.save_dtype_experiment(lambda save_as: [save_as(d) for d in ("float32", "float16")] and "bfloat16",
                                   _dtypes())


def test_save_dtype_experiment_fails_on_a_table_edited_by_hand():
    def edited(save_as):
        save_as("float32"), save_as("float16")
        save_as.rows[-1]["agreement"] = 1.0  # "close enough"
        return nb01.dtype_by_the_rule(save_as.rows)

    with pytest.raises(CheckFailed, match="measuring it again"):
        nb01.save_dtype_experiment(edited, _dtypes())


def _losses(curve):
    return _probe("loss_at", ("position",), lambda position: {"loss": curve(position)}, "loss", budget=16)


def _scan(step=32, against_lowest=True):
    def where_loss_rises(loss_at):
        reference = math.inf
        for position in range(0, 512, step):
            loss = loss_at(position)
            if loss > 1.2 * reference:
                return position
            reference = min(reference, loss) if against_lowest else loss
        return None

    return where_loss_rises


def test_position_experiment():
    def curve(position):
        return 1.0 + 0.15 * max(0, position - 32) / 32

    nb02.position_experiment(_scan(), _losses(curve))
    nb02.position_experiment(_scan(), _losses(lambda position: 1.0))  # never rises: None, after measuring all
    assert nb02.first_rise({0: 2.0, 32: 1.0, 64: 1.1, 96: 1.3}) == 96
    for wrong, message in [
        (_scan(against_lowest=False), "returned None, but in your table the loss at 96"),
        (lambda loss_at: [loss_at(p) for p in (0, 32, 64, 96)] and 64, "the first position .* is 96"),
        (lambda loss_at: [loss_at(p) for p in (0, 32, 64, 96)] and 100, "a position you did not measure"),
        (lambda loss_at: [loss_at(p) for p in (0, 32)] and None, "at least four"),
    ]:
        with pytest.raises(CheckFailed, match=message):
            nb02.position_experiment(wrong, _losses(curve))
    with pytest.raises(CheckFailed, match="without measuring 224"):  # every other position: the rise may be earlier
        nb02.position_experiment(_scan(step=64), _losses(lambda position: 1.0 + 0.15 * max(0, position - 192) / 32))
    with pytest.raises(CheckFailed, match="measure up to 480"):
        nb02.position_experiment(lambda loss_at: [loss_at(p) for p in (0, 32, 64, 96)] and None,
                                 _losses(lambda position: 1.0))


def _rates(best=0.1):
    return _probe("loss_after", ("lr",), lambda lr: {"validation loss": 1 + (math.log10(lr) - math.log10(best)) ** 2},
                  "validation loss")


def _search(grid=(3e-4, 1e-3, 3e-3, 1e-2), extend=True, pick=min):
    def find_fastest_lr(loss_after):
        losses = {lr: loss_after(lr) for lr in grid}
        while extend:
            best = min(losses, key=losses.get)
            if best == min(losses):
                losses[best / 3] = loss_after(best / 3)
            elif best == max(losses):
                losses[best * 3] = loss_after(best * 3)
            else:
                break
        return pick(losses, key=losses.get)

    return find_fastest_lr


def test_fastest_lr():
    nb03.fastest_lr(_search(), _rates(0.1))
    nb03.fastest_lr(_search(), _rates(1e-5))
    for wrong, message in [
        (_search(extend=False), "largest learning rate you tried"),
        (_search(grid=(1e-2, 3e-2, 1e-1, 3e-1), extend=False, pick=max), "has the lower loss"),
        (lambda loss_after: [loss_after(lr) for lr in (1e-3, 1e-2, 1e-1, 1.0)] and 0.05, "did not try"),
        (lambda loss_after: [loss_after(lr) for lr in (1e-2, 1e-1)] and 0.1, "at least four"),
    ]:
        with pytest.raises(CheckFailed, match=message):
            nb03.fastest_lr(wrong, _rates(0.1))


def _runs(scale, noise):
    return _probe("perplexity_after", ("temperature", "seed"),
                  lambda temperature, seed: {"perplexity": 100 + scale * (temperature - 2) ** 2 + noise * seed},
                  "perplexity", budget=18)


def _decide(temperatures=(0.5, 1.0, 2.0, 4.0), seeds=(0, 1, 2), spread=True):
    def best_temperature(perplexity_after):
        runs = {t: [perplexity_after(t, s) for s in seeds] for t in temperatures}
        mean = {t: sum(v) / len(v) for t, v in runs.items()}
        width = {t: max(v) - min(v) for t, v in runs.items()}
        best = min(mean, key=mean.get)
        margin = (lambda t: max(width[t], width[best])) if spread else (lambda t: 0)
        return best, all(mean[t] - mean[best] > margin(t) for t in runs if t != best)

    return best_temperature


def test_temperature_experiment():
    nb04.temperature_experiment(_decide(), _runs(10, 1))
    nb04.temperature_experiment(_decide(), _runs(1, 20))
    assert nb04.temperature_verdict({1.0: [10, 12, 11], 2.0: [20, 21, 22]}) == (1.0, True)
    assert nb04.temperature_verdict({1.0: [10, 30, 11], 2.0: [20, 21, 22]}) == (1.0, False)
    for wrong, message in [
        (_decide(spread=False), "by the rule"),
        (_decide(seeds=(0,)), "at least three temperatures with at least three seeds"),
        (_decide(temperatures=(1.0, 2.0)), "at least three temperatures"),
        (lambda p: [p(t, s) for t in (1.0, 2.0, 4.0) for s in (0, 1, 2)] and (1.0, False), "lowest mean"),
        (lambda p: [p(t, s) for t in (1.0, 2.0, 4.0) for s in (0, 1, 2)] and 2.0, "return \\(temperature, decided\\)"),
        (lambda p: [p(t, s) for t in (1.0, 2.0, 4.0) for s in (0, 1, 2)] + [p(0.5, 0)] and (2.0, True),
         "needs at least three seeds"),
    ]:
        with pytest.raises(CheckFailed, match=message):
            nb04.temperature_experiment(wrong, _runs(1, 20))


# --- the real probes ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_kv_cache_probe_measures_the_formula():
    probe = experiments.kv_cache_probe()
    assert probe(256) - probe(16) == 2 * 4 * 2 * 32 * 4 * 240  # the tiny Llama: 4 layers, 2 kv heads of 32, fp32


@pytest.mark.slow
def test_the_save_dtype_probe_halves_the_file_and_keeps_fp32_exact():
    probe = experiments.save_dtype_probe()
    full, half = probe("float32"), probe("bfloat16")
    assert full["max_logit_error"] == 0.0 and full["agreement"] == 1.0
    assert 0.45 < half["bytes"] / full["bytes"] < 0.55 and 0 < half["max_logit_error"] < 2


@pytest.mark.slow
def test_the_position_probe_rises_past_the_training_window():
    probe = experiments.position_loss_probe()
    inside = min(probe(p) for p in (32, 64, 96))
    far = probe(480)
    assert 0 < inside < 3 and far > 1.2 * inside  # 480 is far past the 128-token window and the 256 positions


@pytest.mark.slow
def test_the_learning_rate_probe_is_repeatable_and_learns():
    probe = experiments.learning_rate_probe(experiments.SmallRun(steps=10))
    first = probe(3e-3)
    again = experiments.learning_rate_probe(experiments.SmallRun(steps=10))(3e-3)
    assert math.isclose(first, again, rel_tol=1e-6)  # same seed, same batches: the table is reproducible
    assert first < math.log(832)  # below the loss of a uniform guess over the vocabulary


@pytest.mark.slow
def test_the_distillation_probe_depends_on_the_seed():
    probe = experiments.distillation_probe(steps=3)
    a, b = probe(1.0, 0), probe(1.0, 1)
    assert 1 < a < 10_000 and a != b


@pytest.mark.slow
def test_the_lora_rank_probe_trains_only_the_adapters():
    probe = experiments.lora_rank_probe(steps=3)
    small, large = probe(rank=1), probe(rank=4)
    assert 0 < small < 20 and 0 < large < 20
    assert probe.measured(rank=4)["trainable parameters"] == 4 * probe.measured(rank=1)["trainable parameters"]
    row = probe.measured(rank=1)  # the mean of one run per seed, and each seed's loss beside it
    seeds = [row[f"seed {seed}"] for seed in experiments.RANK_PROBE_SEEDS]
    assert row["validation loss"] == pytest.approx(sum(seeds) / len(seeds)) and len(set(seeds)) == len(seeds)
    assert row["spread"] > 0 and "loss after 15 steps" not in row  # a 3-step run has no 15th step


@pytest.mark.slow
def test_the_gguf_probe_writes_smaller_files_for_smaller_types():
    probe = experiments.gguf_type_probe()
    f16, q8 = probe("f16"), probe("q8_0")
    assert q8["bytes"] < f16["bytes"] and abs(math.log(q8["perplexity"] / f16["perplexity"])) < 0.05


# --- notebooks 05 and 06: the checks for the experiments proposed there ---------------------------------------------


def _ranks(curve):
    return _probe("loss_after", ("rank",), lambda rank: {"validation loss": curve(rank)}, "validation loss", budget=7)


def _where_lora_stops(ranks=(1, 2, 4, 8, 16, 32)):
    def where_lora_stops(loss_after):
        losses = {rank: loss_after(rank) for rank in ranks}
        lowest = min(losses.values())
        return min(rank for rank, loss in losses.items() if loss <= 1.02 * lowest)

    return where_lora_stops


def test_rank_experiment():
    def saturating(rank):
        return 2.0 + 1.0 / rank  # 3.0, 2.5, 2.25, 2.125, 2.0625, 2.03

    assert nb05.rank_experiment(_where_lora_stops(), _ranks(saturating)).rows  # the probe, for the plot
    assert nb05.smallest_good_rank({1: 3.0, 4: 2.03, 16: 2.0, 64: 2.01}) == 4
    for wrong, message in [
        (_where_lora_stops(ranks=(1, 2, 4, 8)), "largest rank you tried"),
        (lambda loss_after: [loss_after(r) for r in (1, 2, 4, 8, 16, 32)] and 32, "the smallest rank within 2%"),
        (lambda loss_after: [loss_after(r) for r in (1, 2)] and 2, "at least four"),
    ]:
        with pytest.raises(CheckFailed, match=message):
            nb05.rank_experiment(wrong, _ranks(saturating))


def test_rank_experiment_says_what_the_seeds_spread_says(capsys):
    def seeds(losses):
        return lambda rank: {"validation loss": losses[rank][0], "spread": losses[rank][1]}

    flat = {1: (3.0, 0.1), 4: (2.5, 0.1), 16: (2.2, 0.05), 64: (2.19, 0.05)}
    nb05.rank_experiment(_where_lora_stops(ranks=(1, 4, 16, 64)), _probe(
        "loss_after", ("rank",), seeds(flat), "validation loss", budget=7))
    assert "no larger rank is lower by more than the seeds' spread" in capsys.readouterr().out
    falling = {1: (3.0, 0.1), 4: (2.5, 0.1), 16: (2.2, 0.001), 64: (2.16, 0.001)}  # within 2%, beyond the spread
    nb05.rank_experiment(_where_lora_stops(ranks=(1, 4, 16, 64)), _probe(
        "loss_after", ("rank",), seeds(falling), "validation loss", budget=7))
    assert "rank 64 is lower still by more than the seeds' spread" in capsys.readouterr().out


def _types(rows):
    return _probe("export_as", ("file_type",), lambda file_type: dict(rows[file_type]), None, budget=3)


def test_gguf_experiment():
    rows = {"f32": {"bytes": 400, "perplexity": 2.0}, "f16": {"bytes": 200, "perplexity": 2.001},
            "q8_0": {"bytes": 110, "perplexity": 2.5}}

    def choose_gguf(export_as):
        measured = {t: export_as(t) for t in ("f32", "f16", "q8_0")}
        good = [t for t, r in measured.items() if r["perplexity"] <= 1.01 * measured["f32"]["perplexity"]]
        return min(good, key=lambda t: measured[t]["bytes"])

    nb06.gguf_experiment(choose_gguf, _types(rows))
    with pytest.raises(CheckFailed, match="your table gives 'f16'"):
        nb06.gguf_experiment(lambda export_as: [export_as(t) for t in rows] and "q8_0", _types(rows))
    with pytest.raises(CheckFailed, match="write f32"):
        nb06.gguf_experiment(lambda export_as: export_as("f16") and "f16", _types(rows))
    # another choice of types, with the rule applied to its own table
    nb06.gguf_experiment(lambda export_as: nb06.gguf_by_the_rule(
        [{"file_type": t, **export_as(t)} for t in ("q8_0", "f32")]), _types(rows))
    with pytest.raises(CheckFailed, match="your table gives 'f32'"):
        nb06.gguf_experiment(lambda export_as: [export_as(t) for t in ("f32", "q8_0")] and "f16", _types(rows))

    def edited(export_as):
        export_as("f32"), export_as("q8_0")
        export_as.rows[-1]["perplexity"] = 2.0  # the loss typed away
        return "q8_0"

    with pytest.raises(CheckFailed, match="measuring it again"):
        nb06.gguf_experiment(edited, _types(rows))


@pytest.mark.slow
def test_the_proposed_05_and_06_experiments_pass_on_the_real_probes():
    nb05.rank_experiment(_where_lora_stops(ranks=(1, 4, 16, 64)))
    nb06.gguf_experiment(lambda export_as: nb06.gguf_by_the_rule(
        [{"file_type": t, **export_as(t)} for t in ("f32", "f16", "q8_0")]))


# --- notebook 07: the knee of the latency curve --------------------------------------------------------------------


def _latency(curve):
    return _probe("p95_at", ("rate",), lambda rate: {"latency p95": curve(rate)}, "latency p95", budget=8)


def _find_knee(rates=(1.0, 4.0, 16.0, 64.0, 256.0)):
    def find_knee(p95_at):
        p95 = {rate: p95_at(rate) for rate in rates}
        return nb07.knee_rate(p95) or max(rates)

    return find_knee


def test_knee_rate_is_the_last_rate_before_the_latency_doubles():
    assert nb07.knee_rate({1.0: 1.0, 4.0: 1.5, 16.0: 2.5, 64.0: 1.0}) == 4.0  # the first crossing counts
    assert nb07.knee_rate({1.0: 1.0, 4.0: 1.5}) is None


def test_knee_experiment():
    def queueing(rate):
        return 1.0 + rate / 40  # 1.025, 1.1, 1.4, 2.6, 7.4: the knee is at 16

    nb07.knee_experiment(_find_knee(), _latency(queueing))
    for wrong, message in [
        (_find_knee(rates=(1.0, 2.0, 4.0, 8.0)), "factor of 8"),
        (_find_knee(rates=(1.0, 4.0, 16.0)), "at least four"),
        (lambda p95_at: [p95_at(r) for r in (1.0, 4.0, 16.0, 64.0)] and 64.0, "is 16"),
        (lambda p95_at: [p95_at(r) for r in (1.0, 4.0, 16.0, 64.0)] and 20.0, "did not try"),
        (lambda p95_at: 16.0, "without calling p95_at"),
    ]:
        with pytest.raises(CheckFailed, match=message):
            nb07.knee_experiment(wrong, _latency(queueing))
    with pytest.raises(CheckFailed, match="try higher rates"):
        nb07.knee_experiment(_find_knee(), _latency(lambda rate: 1.0 + rate / 1e6))


@pytest.mark.slow
def test_the_latency_probe_queues_at_high_rates():
    probe = experiments.latency_probe(requests=8)
    low, high = probe(0.5), probe(50_000.0)
    assert 0 < low < high  # at 0.5/s each request is alone; at 50,000/s all 8 arrive at once and share 2 places
    assert probe.measured(rate=0.5)["tokens/s"] > 0
