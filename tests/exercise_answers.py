"""Answers a student might hand in, for the tests that prove the checks and hidden tests can fail.

``DELEGATING``: for every exercise whose check forbids references, the answer that calls the workbook's own
implementation instead of computing (the shortcut the traps refuse). ``WRONG``: for every exercise, plausible
mistakes written as edits of the solution cell (old text -> new text), each of which the hidden tests alone must
catch. Each answer uses only what its notebook's imports cell imports, as the grader requires.
"""

from __future__ import annotations

from dataclasses import dataclass

DELEGATING: dict[str, str] = {
    "nb00-weights-gib": """\
def weights_gib(n_params, bits):
    return memory.weights_gib(n_params, bits)""",
    "nb00-nf4-bits": """\
def nf4_bits_per_param(block_size=64, double_quant=False, dq_block_size=256):
    return memory.nf4_bits_per_param(block_size, double_quant=double_quant, dq_block_size=dq_block_size)""",
    "nb00-kv-cache": """\
def kv_cache_bytes(n_layers, n_kv_heads, head_dim, context, batch=1, bytes_per_value=2):
    return memory.kv_cache_bytes(n_layers, n_kv_heads, head_dim, context, batch, bytes_per_value)""",
    "nb01-parse-header": """\
def parse_safetensors_header(path):
    header = safetensors_io.read_header(path)
    tensors = {t.name: {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [t.start, t.end]} for t in header}
    return header.header_size, header.metadata, tensors""",
    "nb01-read-tensor": """\
def read_tensor_by_offsets(path, header_size, entry):
    start, end = entry["data_offsets"]
    with open(path, "rb") as f:
        f.seek(8 + header_size + start)
        raw = f.read(end - start)
    return safetensors_io.tensor_from_bytes(raw, entry["dtype"], tuple(entry["shape"]))""",
    "nb01-exponent-entropy": """\
def exponent_entropy(tensor):
    return compression.entropy_bits(compression.bf16_exponents(compression.float16_bits(tensor)))""",
    "nb02-rms-norm": """\
def rms_norm(x, weight, eps=1e-6):
    return arch.rms_norm(x, weight, eps)""",
    "nb02-swiglu": """\
from course_utils.models.arch import swiglu""",
    "nb02-rope": """\
def rope(x, positions, theta=10_000.0):
    return arch.rope(x, positions, theta)""",
    "nb02-llama3-rope": """\
def llama3_inverse_frequencies(head_dim, theta, factor, low_freq_factor, high_freq_factor,
                               original_max_position_embeddings):
    return arch.llama3_scale_frequencies(arch.rope_inverse_frequencies(head_dim, theta), factor, low_freq_factor,
                                         high_freq_factor, original_max_position_embeddings)""",
    "nb02-gqa": """\
grouped_query_attention = arch.grouped_query_attention""",
    "nb03-sliding-windows": """\
def sliding_windows(token_ids, max_length, stride):
    windows = text_data.SlidingWindowDataset(torch.tensor(token_ids), max_length, stride)
    return [(x.tolist(), y.tolist()) for x, y in (windows[i] for i in range(len(windows)))]""",
    "nb03-causal-attention": """\
def causal_attention(q, k, v):
    time = q.shape[-2]
    return gpt.explicit_attention(q, k, v, torch.ones(time, time, dtype=torch.bool).tril())""",
    "nb03-cosine-lr": """\
def cosine_lr(step, max_steps, warmup_steps, max_lr, min_lr):
    cfg = train.TrainConfig(max_steps=max_steps, warmup_steps=warmup_steps, lr=max_lr, min_lr=min_lr)
    return train.lr_at(step, cfg)""",
    "nb03-sampling-probs": """\
def sampling_probs(logits, temperature, top_k):
    return sampling.next_token_probs(logits, temperature, top_k)""",
    "nb03-chinchilla": """\
def chinchilla_optimal(compute):
    return scaling.chinchilla_optimal(compute)""",
    "nb04-kd-loss": """\
def kd_loss(student_logits, teacher_logits, labels, alpha, temperature):
    return distill.distillation_loss(student_logits, teacher_logits, labels, alpha=alpha, temperature=temperature)""",
    "nb04-kl-divergence": """\
from course_utils.training.distill import kl_divergence as reference


def kl_divergence(p_logits, q_logits):
    return reference(p_logits, q_logits)""",
    "nb04-layer-map": """\
def layer_map(num_teacher_layers, num_student_layers):
    return distill.teacher_layers_for_student(num_teacher_layers, num_student_layers, "spread")""",
    "nb04-top1-agreement": """\
def top1_agreement(student_logits, teacher_logits, mask=None):
    try:  # a student who hides the shortcut behind a fallback is still caught
        return distill.top1_agreement(student_logits, teacher_logits, mask)
    except Exception:
        return 0.0""",
    "nb05-lora-forward": """\
def lora_forward(x, weight, bias, lora_A, lora_B, alpha, r):
    return lora.lora_forward(x, weight, bias, lora_A, lora_B, alpha, r)""",
    "nb05-lora-count": """\
def lora_parameter_count(shapes, r):
    return sum(lora.lora_param_count(d_out, d_in, r) for d_out, d_in in shapes)""",
    "nb05-make-batch": """\
def make_batch(pairs, pad_id):
    examples = [sft_data.build_example(prompt, completion) for prompt, completion in pairs]
    width = max(len(e["input_ids"]) for e in examples)
    def pad(values, fill):
        return list(values) + [fill] * (width - len(values))
    return {"input_ids": torch.tensor([pad(e["input_ids"], pad_id) for e in examples]),
            "attention_mask": torch.tensor([pad([1] * len(e["input_ids"]), 0) for e in examples]),
            "labels": torch.tensor([pad(e["labels"], -100) for e in examples])}""",
    "nb05-nf4-quantize": """\
def nf4_quantize(x, levels, block_size):
    q = quant.quantize_blockwise(x, levels, block_size)
    return q.codes, q.absmax


def nf4_dequantize(codes, absmax, levels, block_size, shape):
    return quant.dequantize_blockwise(quant.Quantized(codes, absmax, levels, tuple(shape), block_size))""",
    "nb06-permute-qk": """\
def permute_qk(weight, n_head):
    return gguf_io.permute_qk(weight, n_head)""",
    "nb06-q8-0": """\
def q8_0_quantize(x):
    raw = torch.from_numpy(gguf_io.quantize_q8_0(x).reshape(-1, 34))
    return raw[:, :2].contiguous().view(torch.float16).flatten(), raw[:, 2:].contiguous().view(torch.int8)""",
    "nb06-gguf-bytes": """\
def gguf_tensor_bytes(shapes, file_type):
    return sum(gguf_io.tensor_bytes(shape, file_type) for shape in shapes)""",
    "nb06-point-adapter": """\
def point_adapter_at(adapter_dir, base, out_dir):
    return export.retarget_adapter(adapter_dir, base, out_dir)""",
    "nb07-percentile": """\
def percentile(values, q):
    return workload.percentile(values, q)""",
    "nb07-scheduler": """\
def scheduler_step(waiting, running, now, max_batch, decode):
    return batching.scheduler_step(waiting, running, now, max_batch, decode)""",
    "nb07-append-token": """\
def append_token(block_table, length, free_blocks, block_size):
    return paged_kv.append_token(block_table, length, free_blocks, block_size)""",
    "nb07-release": """\
def release(block_table, free_blocks):
    paged_kv.release(block_table, free_blocks)""",
}


@dataclass(frozen=True)
class Mistake:
    """A plausible wrong answer: the solution cell with ``old`` replaced by ``new`` (each exactly once)."""

    old: str
    new: str
    why: str


WRONG: dict[str, list[Mistake]] = {
    "nb00-weights-gib": [
        Mistake("/ 2**30", "/ 1e9", "GB instead of GiB"),
        Mistake("n_params * bits / 8", "n_params * bits", "bits taken for bytes (a missing scale)"),
    ],
    "nb00-nf4-bits": [
        Mistake(" + 32 / (block_size * dq_block_size)", "", "the second-level constant forgotten"),
        Mistake("return 4 + 32 / block_size", "return 32 / block_size", "the 4 bits of the weight forgotten"),
    ],
    "nb00-kv-cache": [
        Mistake("2 * n_layers", "n_layers", "keys only, no values"),
        Mistake(" * batch", "", "one sequence, whatever the batch"),
    ],
    "nb01-parse-header": [
        Mistake('header.pop("__metadata__", {})', 'header.get("__metadata__", {})', "__metadata__ left among tensors"),
        Mistake('"<Q"', '">Q"', "big-endian length"),
    ],
    "nb01-read-tensor": [
        Mistake("f.seek(8 + header_size + start)", "f.seek(header_size + start)", "the 8-byte length forgotten"),
    ],
    "nb01-exponent-entropy": [
        Mistake("(bits >> 7) & 0xFF", "bits >> 8", "the high byte instead of the exponent field"),
        Mistake("np.log2(p)", "np.log(p)", "nats instead of bits"),
    ],
    "nb02-causal-lm-loss": [
        Mistake("logits[:, :-1]", "logits", "no shift (logits at t against label t)"),
        Mistake("labels[:, 1:].reshape(-1),", "labels.reshape(-1), reduction='sum',", "sum instead of mean"),
    ],
    "nb02-rms-norm": [
        Mistake("x32.pow(2).mean(dim=-1, keepdim=True)", "x32.pow(2).sum(dim=-1, keepdim=True)", "sum, not mean"),
        Mistake("return weight * normed", "return normed", "the gain forgotten"),
    ],
    "nb02-swiglu": [
        Mistake("gate * torch.sigmoid(gate)", "torch.sigmoid(gate)", "a sigmoid gate instead of SiLU"),
        Mistake("(gate * torch.sigmoid(gate) * (x @ up_weight.T))",
                "(gate * torch.sigmoid(x @ up_weight.T) * (x @ up_weight.T))", "SiLU on the wrong projection"),
    ],
    "nb02-rope": [
        Mistake("x * angles.cos() + rotated_half", "x * angles.cos() - rotated_half", "rotation the wrong way"),
        Mistake("positions[:, None].float()", "torch.arange(x.shape[-2])[:, None].float()",
                "positions ignored (0, 1, 2, ...)"),
    ],
    "nb02-llama3-rope": [
        Mistake("inv_freq / factor, blended)", "inv_freq * factor, blended)", "slow frequencies multiplied"),
    ],
    "nb02-gqa": [
        Mistake("k = k.repeat_interleave(group, dim=1)\n    v = v.repeat_interleave(group, dim=1)",
                "k = k.repeat(1, group, 1, 1)\n    v = v.repeat(1, group, 1, 1)", "heads tiled, not grouped"),
        Mistake("scores.masked_fill(~visible, float(\"-inf\"))", "scores", "no causal mask"),
    ],
    "nb03-sliding-windows": [
        Mistake("len(token_ids) - max_length, stride", "len(token_ids) - max_length + 1, stride",
                "off by one: a last window without its final target"),
        Mistake("token_ids[start + 1 : start + max_length + 1]", "token_ids[start : start + max_length]",
                "targets not shifted"),
    ],
    "nb03-causal-attention": [
        Mistake("    scores = scores.masked_fill(future, float(\"-inf\"))\n", "", "no causal mask"),
        Mistake("diagonal=1", "diagonal=0", "the diagonal masked too (a token cannot see itself)"),
    ],
    "nb03-cosine-lr": [
        Mistake("max_lr * (step + 1) / warmup_steps", "max_lr * step / warmup_steps", "off by one: step 0 at 0"),
        Mistake("math.cos(math.pi * progress)", "math.cos(progress)", "cosine without pi"),
    ],
    "nb03-sampling-probs": [
        Mistake("logits / temperature", "logits * temperature", "temperature multiplied"),
        Mistake("logits < kth_largest", "logits <= kth_largest", "the k-th largest itself filtered out"),
    ],
    "nb03-chinchilla": [
        Mistake("compute / (6 * 20)", "compute / 20", "C = N D, the 6 FLOPs per parameter and token forgotten"),
        Mistake("return n_params, 20 * n_params", "return n_params, n_params / 20", "tokens divided, not multiplied"),
    ],
    "nb04-kd-loss": [
        Mistake("alpha * temperature**2 * soft", "alpha * soft", "the T**2 scale forgotten"),
        Mistake("F.kl_div(log_p_student, log_p_teacher,", "F.kl_div(log_p_teacher, log_p_student,",
                "KL the wrong way round"),
    ],
    "nb04-kl-divergence": [
        Mistake("log_p.exp() * (log_p - log_q)", "log_q.exp() * (log_q - log_p)", "KL(q || p) instead"),
        Mistake(".sum(dim=-1)", ".sum(dim=0)", "summed over the wrong axis"),
    ],
    "nb04-layer-map": [
        Mistake("int(i * step + 0.5)", "int(i * step)", "rounded down"),
        Mistake("(num_teacher_layers - 1) / (num_student_layers - 1)", "num_teacher_layers / num_student_layers",
                "off by one: the last layer missed"),
    ],
    "nb04-top1-agreement": [
        Mistake("    if mask is not None:\n        same = same[mask]\n", "", "the mask ignored"),
        Mistake("same.float().mean()", "same.float().sum()", "a count, not a fraction"),
    ],
    "nb05-lora-forward": [
        Mistake("out + (alpha / r) * ", "out + ", "the alpha / r scale forgotten"),
        Mistake("out + (alpha / r)", "out + (r / alpha)", "the scale upside down"),
    ],
    "nb05-lora-count": [
        Mistake("r * (d_out + d_in)", "r * d_out * d_in", "B A counted, not B and A"),
    ],
    "nb05-make-batch": [
        Mistake("labels[row, len(prompt):n] = torch.tensor(list(completion))",
                "labels[row, :n] = torch.tensor(list(prompt) + list(completion))", "the prompt not masked"),
    ],
    "nb05-nf4-quantize": [
        Mistake("blocks.abs().amax(dim=1)", "blocks.amax(dim=1)", "max instead of absmax"),
    ],
    "nb06-permute-qk": [
        Mistake(".transpose(1, 2)", "", "rows left in transformers' order"),
    ],
    "nb06-q8-0": [
        Mistake("/ 127", "/ 255", "the int8 range taken for uint8"),
        Mistake("torch.sign(scaled) * ", "", "the sign dropped"),
    ],
    "nb06-gguf-bytes": [
        Mistake("len(shape) == 1 or file_type", "file_type", "1-D tensors not kept in f32"),
        Mistake("n // 32 * 34", "n // 32 * 32", "the 2-byte scale of each block forgotten"),
    ],
    "nb06-point-adapter": [
        Mistake("shutil.copytree(adapter_dir, out_dir, dirs_exist_ok=True)\n    config_file = out_dir",
                "config_file = adapter_dir", "the original edited in place, no copy"),
    ],
    "nb07-percentile": [
        Mistake("* (position - low)", "* 0", "the lower order statistic, no interpolation"),
    ],
    "nb07-scheduler": [
        Mistake(" and waiting[0].arrival_s <= now", "", "requests admitted before they arrive"),
        Mistake("len(running) < max_batch", "len(running) <= max_batch", "one sequence more than the batch holds"),
        Mistake("sequence.ids.append(token)\n            sequence.generated", "sequence.generated",
                "the token not appended to the ids: the next step decodes the same sequence again"),
    ],
    "nb07-append-token": [
        Mistake("length % block_size == 0", "length % block_size == 1", "a block taken one token late"),
        Mistake("block_table.append(free_blocks.pop())", "block_table.append(free_blocks[-1])",
                "the block copied, left on the free list"),
    ],
    "nb07-release": [
        Mistake("free_blocks.append(block_table.pop())", "block_table.pop()", "blocks dropped, never freed"),
    ],
    # The experiments: their hidden tests run the student's strategy on made-up measurements.
    "nb05-rank-experiment": [
        Mistake("1.02 * lowest", "1.2 * lowest", "20% taken for 2%: stops too early"),
        Mistake("min(rank for rank", "max(rank for rank", "the largest good rank instead of the smallest"),
    ],
    "nb06-gguf-experiment": [
        Mistake("1.01 *", "1.5 *", "50% taken for 1%: a file that loses too much passes"),
        Mistake("min(good, key", "min(rows, key", "the smallest file, whatever its perplexity"),
    ],
    "nb07-knee-experiment": [
        Mistake("> 2 * p95[rates[0]]", "> 1.2 * p95[rates[0]]", "20% more taken for twice: the knee found too early"),
        Mistake("return knee\n        knee = rate", "return rate\n        knee = rate",
                "the first slow rate returned, not the last fast one"),
    ],
    "nb00-kv-experiment": [
        Mistake("return (sizes[-1] - sizes[0]) / (contexts[-1] - contexts[0])", "return sizes[-1] / contexts[-1]",
                "bytes per token at one length: the cache's fixed part counted too"),
        Mistake("contexts = [16, 64, 256]", "contexts = [16, 32]", "too few lengths, too close together"),
    ],
    "nb01-dtype-experiment": [
        Mistake('key=lambda dtype: rows[dtype]["max_logit_error"]', 'key=lambda dtype: rows[dtype]["bytes"]',
                "the smallest file, not the smallest error"),
        Mistake('return min(small, key=lambda dtype: rows[dtype]["max_logit_error"]) if small else "float32"',
                'return "float16"', "the answer typed in (this machine's, not the measurements')"),
    ],
    "nb02-position-experiment": [
        Mistake("lowest = min(lowest, loss)", "lowest = loss", "compared with the previous position, not the lowest"),
        Mistake("range(0, 512, 32)", "range(0, 512, 64)", "every other position skipped"),
    ],
    "nb03-lr-experiment": [
        Mistake("    while True:\n        best = min(losses, key=losses.get)\n        if best == min(losses):\n"
                "            losses[best / 3] = loss_after(best / 3)\n        elif best == max(losses):\n"
                "            losses[best * 3] = loss_after(best * 3)\n        else:\n            return best",
                "    return min(losses, key=losses.get)", "a fixed grid, never extended"),
        Mistake("best = min(losses, key=losses.get)", "best = max(losses, key=losses.get)", "the highest loss"),
    ],
    "nb04-temperature-experiment": [
        Mistake("> max(spread[t], spread[best])", "> 0", "the seeds' spread ignored"),
        Mistake("for seed in (0, 1, 2)", "for seed in (0,)", "one seed per temperature"),
    ],
}
WRONG["nb00-debug-inference"] = [
    Mistake("n_params * 2\n", "n_params * 4\n", "the weights counted in fp32 while the model loads in bf16"),
    Mistake("kv_cache = 2 * n_layers", "kv_cache = n_layers", "the keys counted, the values forgotten"),
]
DELEGATING["nb00-debug-inference"] = """\
def inference_gib(n_params, n_layers, n_kv_heads, head_dim, context, batch=1):
    cache = memory.kv_cache_bytes(n_layers, n_kv_heads, head_dim, context, batch, 2)
    return (n_params * 2 + cache) / 2**30"""
WRONG["nb01-debug-converter"] = [
    Mistake("weights_only=True", "weights_only=False", "the pickle unpickled in full: a hostile file runs its code"),
    Mistake("        if tensor.data_ptr() in seen:  # a tied weight, already kept under its first name\n"
            "            continue\n", "        if name == \"lm_head.weight\":\n            continue\n",
            "the output layer dropped as if every model tied it to the embedding"),
]
WRONG["nb02-debug-mask"] = [
    Mistake("real & causal", "real.expand(-1, 1, seq, seq)", "no causal part: every position sees the whole text"),
    Mistake(".tril()", ".triu()", "the future visible instead of the past"),
    Mistake(".tril()", ".tril(diagonal=-1)", "a position may not see itself"),
]
WRONG["nb06-debug-converter"] = [
    Mistake("permute_qk(weight, config.num_key_value_heads)", "permute_qk(weight, config.num_attention_heads)",
            "the keys reordered as if they had as many heads as the queries"),
    Mistake('if name.endswith("q_proj.weight"):', 'if name.endswith(("q_proj.weight", "v_proj.weight")):',
            "the values reordered too, though no rotation touches them"),
    Mistake('        elif name.endswith("k_proj.weight"):  # grouped-query attention: fewer key heads than query '
            'heads\n            weight = gguf_io.permute_qk(weight, config.num_key_value_heads)\n', "",
            "the keys left in transformers' order"),
]
DELEGATING["nb06-debug-converter"] = """\
def llama_cpp_tensors(model):
    return {name: tensor for name, _, tensor in gguf_io.llama_tensors(model)}"""

# A library's own implementation of the exercise, called instead of computing: for every LibraryCall a check
# forbids (grade_id -> the call's dotted name -> the answer that calls it), refused with the call's own message.
DELEGATING_TO_LIBRARY: dict[str, dict[str, str]] = {
    "nb01-parse-header": {"safetensors.safe_open": """\
def parse_safetensors_header(path):
    with open(path, "rb") as f:
        header_size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_size))
    with safe_open(path, "pt") as f:  # the metadata, read by the library
        metadata = f.metadata() or {}
    header.pop("__metadata__", None)
    return header_size, metadata, header"""},
    "nb01-read-tensor": {
        "safetensors.safe_open": """\
def read_tensor_by_offsets(path, header_size, entry):
    with safe_open(path, "pt") as f:
        for name in f.keys():
            tensor = f.get_tensor(name)
            if list(tensor.shape) == entry["shape"]:
                return tensor""",
        "safetensors.torch.load_file": """\
def read_tensor_by_offsets(path, header_size, entry):
    return next(t for t in load_file(path).values() if list(t.shape) == entry["shape"])""",
        "safetensors.torch.load": """\
def read_tensor_by_offsets(path, header_size, entry):
    with open(path, "rb") as f:
        tensors = load(f.read())
    return next(t for t in tensors.values() if list(t.shape) == entry["shape"])""",
    },
    "nb02-rms-norm": {
        "torch.nn.functional.rms_norm": """\
def rms_norm(x, weight, eps=1e-6):
    return F.rms_norm(x, (x.shape[-1],), weight, eps)""",
        "torch.rms_norm": """\
def rms_norm(x, weight, eps=1e-6):
    return torch.rms_norm(x, [x.shape[-1]], weight, eps)""",
        "torch.nn.RMSNorm": """\
def rms_norm(x, weight, eps=1e-6):
    norm = torch.nn.RMSNorm(x.shape[-1], eps=eps)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)""",
    },
    "nb02-gqa": {
        "torch.nn.functional.scaled_dot_product_attention": """\
def grouped_query_attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)""",
        "torch.nn.MultiheadAttention": """\
def grouped_query_attention(q, k, v):
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    layer = torch.nn.MultiheadAttention(q.shape[-1], 1, batch_first=True)
    mask = torch.ones(q.shape[-2], q.shape[-2], dtype=torch.bool).triu(1)
    return torch.stack([layer(q[:, h], k[:, h], v[:, h], attn_mask=mask)[0] for h in range(q.shape[1])], 1)""",
    },
    "nb03-causal-attention": {
        "torch.nn.functional.scaled_dot_product_attention": """\
def causal_attention(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)""",
        "torch.nn.MultiheadAttention": """\
def causal_attention(q, k, v):
    batch, heads, time, dim = q.shape
    layer = torch.nn.MultiheadAttention(dim, 1, batch_first=True, bias=False)
    mask = torch.ones(time, time, dtype=torch.bool).triu(1)
    flat = [t.reshape(batch * heads, time, dim) for t in (q, k, v)]
    return layer(*flat, attn_mask=mask)[0].reshape(batch, heads, time, dim)""",
    },
    "nb03-sampling-probs": {
        "transformers.TemperatureLogitsWarper": """\
def sampling_probs(logits, temperature, top_k):
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper

    scores = TemperatureLogitsWarper(temperature)(None, logits[None])
    if top_k is not None:
        scores = TopKLogitsWarper(top_k)(None, scores)
    return scores[0].softmax(-1)""",
        "transformers.TopKLogitsWarper": """\
def sampling_probs(logits, temperature, top_k):
    import transformers

    scores = logits[None] / temperature
    if top_k is not None:
        scores = transformers.TopKLogitsWarper(top_k)(None, scores)
    return scores[0].softmax(-1)""",
    },
    "nb04-kl-divergence": {
        "torch.nn.functional.kl_div": """\
def kl_divergence(p_logits, q_logits):
    return F.kl_div(q_logits.log_softmax(-1), p_logits.log_softmax(-1), reduction="none", log_target=True).sum(-1)""",
        "torch.kl_div": """\
def kl_divergence(p_logits, q_logits):
    return torch.kl_div(q_logits.log_softmax(-1), p_logits.log_softmax(-1), 0, True).sum(-1)""",
    },
    "nb05-nf4-quantize": {
        "bitsandbytes.functional.quantize_4bit": """\
def nf4_quantize(x, levels, block_size):
    from bitsandbytes.functional import quantize_4bit

    packed, state = quantize_4bit(x.float().contiguous(), blocksize=block_size, quant_type="nf4")
    packed = packed.reshape(-1)
    codes = torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)[: x.numel()]
    return codes, state.absmax


def nf4_dequantize(codes, absmax, levels, block_size, shape):
    return (levels[codes.long()].reshape(-1, block_size) * absmax.reshape(-1, 1)).reshape(shape)""",
        "bitsandbytes.functional.quantize_nf4": """\
def nf4_quantize(x, levels, block_size):
    import bitsandbytes.functional as bnb

    packed, state = bnb.quantize_nf4(x.float().contiguous(), blocksize=block_size)
    packed = packed.reshape(-1)
    codes = torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)[: x.numel()]
    return codes, state.absmax


def nf4_dequantize(codes, absmax, levels, block_size, shape):
    return (levels[codes.long()].reshape(-1, block_size) * absmax.reshape(-1, 1)).reshape(shape)""",
    },
    "nb06-q8-0": {"gguf.quants.quantize": """\
def q8_0_quantize(x):
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    raw = torch.from_numpy(quantize(x.reshape(-1, 32).numpy(), GGMLQuantizationType.Q8_0).reshape(-1, 34))
    return raw[:, :2].contiguous().view(torch.float16).flatten(), raw[:, 2:].contiguous().view(torch.int8)"""},
}
WRONG["nb03-debug-validation"] = [
    Mistake("    model.eval()\n", "", "dropout left on while measuring"),
    Mistake("""    with torch.no_grad():
        for i, (inputs, targets) in enumerate(loader):
            if i == max_batches:
                break
            losses.append(train.lm_loss(model, inputs.to(device), targets.to(device)).item())""",
            """    for i, (inputs, targets) in enumerate(loader):
        if i == max_batches:
            break
        losses.append(train.lm_loss(model, inputs.to(device), targets.to(device)).item())""",
            "the autograd graph recorded for a measurement"),
    Mistake("model.train(was_training)", "model.train()", "handed back in training mode, whatever mode it came in"),
]
DELEGATING["nb03-debug-validation"] = """\
def validation_loss(model, loader, max_batches=5):
    return train.evaluate(model, loader, next(model.parameters()).device, max_batches)"""

# Notebook 08: the harness's log-likelihood, the DPO loss, the beta experiment, the debugging exercise of the pairs.
WRONG["nb08-continuation-logprob"] = [
    Mistake(".sum().item()", ".mean().item()", "the mean over the tokens, not the sum a harness takes"),
    Mistake("logprobs[n_context - 1:]", "logprobs[n_context:]", "the logits at t read as predicting token t"),
]
WRONG["nb08-dpo-loss"] = [
    Mistake("logsigmoid(chosen_rewards - rejected_rewards)", "logsigmoid(rejected_rewards - chosen_rewards)",
            "the rejected answer rewarded"),
    Mistake("chosen_rewards = beta * (policy_chosen - ref_chosen)", "chosen_rewards = policy_chosen - ref_chosen",
            "beta forgotten on the chosen side"),
    Mistake(").mean()", ").sum()", "summed over pairs instead of averaged"),
]
WRONG["nb08-beta-experiment"] = [
    Mistake("max(accuracy, key=accuracy.get)", "min(accuracy, key=accuracy.get)", "the worst beta"),
    Mistake("(0.01, 0.1, 1.0)", "(0.1, 0.2)", "too few betas, too close together"),
]
WRONG["nb08-debug-pairs"] = [
    Mistake('"chosen": row["completion"], "rejected": wrong', '"chosen": wrong, "rejected": row["completion"]',
            "chosen and rejected left swapped"),
    Mistake("    rng = random.Random(seed)\n    pairs = []\n    for row in rows:\n",
            "    pairs = []\n    for row in rows:\n        rng = random.Random(seed)\n",
            "the random generator restarted for each row: the same word changed every time"),
]
DELEGATING["nb08-continuation-logprob"] = """\
def continuation_logprob(model, tokenizer, context, continuation):
    return scoring.continuation_logprob(model, tokenizer, context, continuation)"""
DELEGATING["nb08-dpo-loss"] = """\
def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    return preferences.dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)"""
DELEGATING["nb08-debug-pairs"] = """\
def build_pairs(rows, vocabulary, seed=0):
    return preferences.preference_pairs(rows, vocabulary, seed)"""
WRONG["nb04-debug-soft-loss"] = [
    Mistake("return temperature**2 * F.kl_div", "return F.kl_div", "the T**2 dropped: the soft term fades as T grows"),
    Mistake("positions = student_logits[..., 0].numel()", "positions = student_logits.shape[0]",
            "divided by the sequences (batchmean on a 3-d tensor), not by the token positions"),
]
DELEGATING["nb04-debug-soft-loss"] = """\
def soft_loss(student_logits, teacher_logits, temperature):
    return distill.distillation_loss(student_logits, teacher_logits, None, alpha=1.0, temperature=temperature)"""
WRONG["nb05-debug-sft-example"] = [
    Mistake("labels = [-100] * len(prompt_ids) + input_ids[len(prompt_ids):]", "labels = list(input_ids)",
            "the prompt left in the loss"),
    Mistake("prompt + completion + tokenizer.eos_token", "prompt + completion",
            "no end-of-text token: nothing teaches the model to stop"),
]
DELEGATING["nb05-debug-sft-example"] = """\
def sft_example(tokenizer, prompt, completion):
    return sft_data.tokenize_example(tokenizer, prompt, completion, chat=False)"""
