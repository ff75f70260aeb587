"""Rebuild everything in data/ from nothing but this package: corpora, tokenizer, tiny checkpoints, manifest.

``make data`` (or ``python data/build.py``) runs :func:`build_all`. The manifest records what was built (sizes,
hashes, configs, measured losses) so that a test can rebuild into a temporary folder and compare.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from course_utils.data_build import stories, tiny_models, zorbish
from course_utils.data_build.tokenizer import build_tokenizer
from course_utils.ground import paths

SEED = 0
N_TRAIN_STORIES = 6000
N_VALIDATION_STORIES = 300
TOKENIZER_VOCAB = 832    # 13 x 64, below the 864 tokens where BPE runs out of pairs seen twice: the LM head's
                         # rows are then a multiple of 64, like every other weight dimension
MANIFEST = "MANIFEST.json"
LOSS_TOLERANCE = 0.05    # relative: CPUs with other vector units round differently
# Files whose bytes depend only on the seed and the library versions (model weights depend on the CPU too).
EXACT_SUFFIXES = (".jsonl", ".json", ".jinja", ".txt")
GENERATED = ("datasets", "tokenizer", "models")  # the folders a build replaces
STAGING = ".building"  # where a build writes before it replaces them


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _versions() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}


def build_all(out_dir: str | Path | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Build every artifact into ``out_dir`` (default: the repository's data/) and return the manifest."""
    import torch

    from course_utils.training.text_data import encode_documents

    final = Path(out_dir) if out_dir else paths.data_dir()
    # Build beside the data and move it into place only once everything succeeded: an interrupted build must
    # not leave data/ without its models.
    out = final / STAGING
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    # 1. Corpora: stories for pretraining, Zorbish for fine-tuning.
    all_stories = stories.make_stories(N_TRAIN_STORIES + N_VALIDATION_STORIES, SEED)
    story_splits = {"train": all_stories[:N_TRAIN_STORIES], "validation": all_stories[N_TRAIN_STORIES:]}
    for split, texts in story_splits.items():
        write_jsonl(out / "datasets" / "tiny-stories" / f"{split}.jsonl", [{"text": t} for t in texts])
    for split, rows in zorbish.make_splits(SEED).items():
        write_jsonl(out / "datasets" / "zorbish" / f"{split}.jsonl", rows)
    (out / "datasets" / "zorbish" / "dictionary.json").write_text(
        json.dumps(zorbish.make_dictionary(SEED), indent=1) + "\n")
    say(f"corpora written: {len(all_stories)} stories, Zorbish splits")

    # 2. Tokenizer, trained on the training stories only.
    tokenizer = build_tokenizer(story_splits["train"], out / "tokenizer", TOKENIZER_VOCAB, tiny_models.CONTEXT)
    say(f"tokenizer trained: {len(tokenizer)} tokens")
    if len(tokenizer) % tiny_models.MULTIPLE_OF:
        raise RuntimeError(f"the tokenizer has {len(tokenizer)} tokens, not a multiple of {tiny_models.MULTIPLE_OF}: "
                           "lower TOKENIZER_VOCAB to a multiple the corpus can reach")
    split_words = [w for w in zorbish.CODE_WORDS if len(tokenizer.tokenize(" " + w)) != 1]
    if split_words:
        raise RuntimeError(f"Zorbish code words {split_words} are not single tokens; choose more frequent words")
    train_ids = encode_documents(tokenizer, story_splits["train"])
    val_ids = encode_documents(tokenizer, story_splits["validation"])

    # 3. Tiny checkpoints.
    models: dict[str, Any] = {}
    samples: dict[str, str] = {}
    prompt = "Once upon a time, there was"
    trained = {}
    for spec in (tiny_models.TINY_LLAMA, tiny_models.TINY_GPT2):
        say(f"pretraining {spec.name} for {spec.steps} steps")
        model, state = tiny_models.pretrain(spec, tokenizer, train_ids, val_ids, SEED, progress=progress)
        trained[spec.name] = (model, state, spec)
    spec = tiny_models.TINY_LLAMA_STUDENT
    say(f"distilling {spec.name} from tiny-llama for {spec.steps} steps")
    student, state = tiny_models.distill(spec, trained["tiny-llama"][0], train_ids, val_ids, SEED, progress=progress)
    trained[spec.name] = (student, state, spec)
    for name, (model, state, spec) in trained.items():
        folder = out / "models" / name
        tiny_models.save_tiny_model(model, tokenizer, folder)
        val_loss = tiny_models.validation_loss(model, val_ids)
        models[name] = tiny_models.describe(model, state, spec, val_loss)
        samples[name] = tiny_models.sample_text(model, tokenizer, prompt)
        say(f"{name}: validation loss {val_loss:.3f}")

    manifest = {
        "seed": SEED,
        "versions": _versions(),
        "corpus": {"train_stories": N_TRAIN_STORIES, "validation_stories": N_VALIDATION_STORIES,
                   "train_tokens": len(train_ids), "validation_tokens": len(val_ids),
                   "tokenizer_vocab": len(tokenizer)},
        "models": models,
        "samples": {"prompt": prompt, **samples},
        "files": {
            str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": sha256(p)}
            for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in (MANIFEST, "README.md", "build.py")
        },
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    (out / "README.md").write_text(render_readme(manifest))
    for generated in GENERATED:
        shutil.rmtree(final / generated, ignore_errors=True)
        (out / generated).rename(final / generated)
    for name in (MANIFEST, "README.md"):
        (out / name).replace(final / name)
    out.rmdir()
    say(f"done: manifest written to {final / MANIFEST}")
    return manifest


def compare_manifests(committed: dict[str, Any], rebuilt: dict[str, Any],
                      loss_tolerance: float = LOSS_TOLERANCE) -> list[str]:
    """Differences that matter between two manifests (an empty list means the rebuild reproduces the data)."""
    problems = []
    if set(committed["files"]) != set(rebuilt["files"]):
        problems.append(f"file lists differ: only committed {sorted(set(committed['files']) - set(rebuilt['files']))},"
                        f" only rebuilt {sorted(set(rebuilt['files']) - set(committed['files']))}")
    for name in sorted(set(committed["files"]) & set(rebuilt["files"])):
        a, b = committed["files"][name], rebuilt["files"][name]
        if a["bytes"] != b["bytes"]:
            problems.append(f"{name}: {a['bytes']} bytes committed, {b['bytes']} rebuilt")
        elif name.endswith(EXACT_SUFFIXES) and a["sha256"] != b["sha256"]:
            problems.append(f"{name}: same size but different content")
    if committed["corpus"] != rebuilt["corpus"]:
        problems.append(f"corpus statistics differ: {committed['corpus']} vs {rebuilt['corpus']}")
    for name, a in committed["models"].items():
        b = rebuilt["models"].get(name)
        if b is None:
            problems.append(f"model {name} was not rebuilt")
            continue
        for key in ("architecture", "parameters", "train_steps", "tokens_seen"):
            if a[key] != b[key]:
                problems.append(f"{name}.{key}: {a[key]} committed, {b[key]} rebuilt")
        for key in ("final_train_loss", "validation_loss"):
            if abs(a[key] - b[key]) > loss_tolerance * a[key]:
                problems.append(f"{name}.{key}: {a[key]} committed, {b[key]} rebuilt "
                                f"(more than {loss_tolerance:.0%} apart)")
    return problems


def render_readme(manifest: dict[str, Any]) -> str:
    """data/README.md, written from the manifest so that every number in it was measured by the build."""
    corpus = manifest["corpus"]
    lines = [
        "# data/: built by the workbook, not downloaded",
        "",
        "Everything here is generated by `course_utils.data_build` (run `make data` or `python data/build.py`);",
        "nothing comes from outside. This file is written by the build: every number below was measured by it.",
        "",
        "| folder | what | made by |",
        "| --- | --- | --- |",
        f"| `datasets/tiny-stories/` | {corpus['train_stories']} training and {corpus['validation_stories']} "
        f"validation stories ({corpus['train_tokens']:,} + {corpus['validation_tokens']:,} tokens) | "
        "`data_build.stories` (seeded grammar) |",
        "| `datasets/zorbish/` | prompt/completion pairs in a made-up language, disjoint train/validation/test "
        "splits, and `dictionary.json` (the answer key) | `data_build.zorbish` |",
        f"| `tokenizer/` | byte-level BPE, {corpus['tokenizer_vocab']} tokens, Hugging Face format | "
        "`data_build.tokenizer` |",
        "| `models/` | tiny checkpoints (`save_pretrained`: config.json, generation_config.json, "
        "model.safetensors, tokenizer files) | `data_build.tiny_models` with `course_utils.training.train` |",
        "",
        "| model | architecture | parameters | steps | tokens seen | validation loss | training time (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in manifest["models"].items():
        lines.append(f"| `{name}` | {m['architecture']} | {m['parameters']:,} | {m['train_steps']} | "
                     f"{m['tokens_seen']:,} | {m['validation_loss']:.3f} | {m['train_seconds']} |")
    lines += ["", f"Greedy continuations of \"{manifest['samples']['prompt']}\":", ""]
    lines += [f"- `{name}`: {text}" for name, text in manifest["samples"].items() if name != "prompt"]
    versions = ", ".join(f"{k} {v}" for k, v in manifest["versions"].items())
    lines += ["", f"Built in {manifest['build_seconds']} s with {versions}. "
              "`tests/test_data_build.py` rebuilds everything into a temporary folder and checks that it matches "
              "`MANIFEST.json`: identical corpora and tokenizer, identical configs and file sizes, losses within "
              f"{LOSS_TOLERANCE:.0%}.", ""]
    return "\n".join(lines)
