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
    # The experiments: their hidden tests run the student's strategy on made-up measurements.
    "nb05-rank-experiment": [
        Mistake("1.02 * lowest", "1.2 * lowest", "20% taken for 2%: stops too early"),
        Mistake("min(rank for rank", "max(rank for rank", "the largest good rank instead of the smallest"),
    ],
    "nb06-gguf-experiment": [
        Mistake("1.01 *", "1.5 *", "50% taken for 1%: a file that loses too much passes"),
        Mistake("min(good, key", "min(rows, key", "the smallest file, whatever its perplexity"),
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
