"""data/: generators are seeded, Zorbish follows its rules, the committed data matches its manifest, and a rebuild
from scratch reproduces it."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from course_utils.data_build import stories, zorbish
from course_utils.data_build.build import MANIFEST, build_all, compare_manifests, sha256
from course_utils.ground import paths


@pytest.fixture(scope="module")
def manifest():
    return json.loads((paths.data_dir() / MANIFEST).read_text())


def test_stories_are_seeded():
    assert stories.make_stories(5, 7) == stories.make_stories(5, 7)
    assert stories.make_stories(5, 7) != stories.make_stories(5, 8)
    story = stories.make_stories(1, 0)[0]
    assert story[0].isupper() and story.endswith((".", "!", '"')) and " a orange" not in story


def test_zorbish_rules():
    dictionary = zorbish.make_dictionary(0)
    assert len(set(dictionary.values())) == len(zorbish.VOCABULARY)  # one-to-one
    assert not set(dictionary.values()) & set(zorbish.VOCABULARY)
    said = zorbish.translate("the red cat sleeps.", dictionary)
    assert said.split() == [dictionary["the"], dictionary["cat"], dictionary["red"], dictionary["sleeps"], "zo"]
    with pytest.raises(KeyError, match="No Zorbish word"):
        zorbish.translate("the red cow sleeps.", dictionary)
    with pytest.raises(ValueError, match="four words"):
        zorbish.translate("the cat sleeps.", dictionary)


def test_zorbish_splits_are_disjoint_and_complete():
    splits = zorbish.make_splits(0)
    sentences = [row["english"] for rows in splits.values() for row in rows]
    assert len(sentences) == len(set(sentences)) == 2 * 9 * 12 * 4
    assert {k: len(v) for k, v in splits.items()} == zorbish.SPLIT_SIZES


def test_code_words_are_single_tokens():
    from course_utils.ground.sources import load_tokenizer

    tokenizer = load_tokenizer("tiny-llama")
    assert all(len(tokenizer.tokenize(" " + w)) == 1 for w in zorbish.CODE_WORDS)


def test_committed_data_matches_its_manifest(manifest):
    root = paths.data_dir()
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} - {MANIFEST, "README.md", "build.py"}
    assert on_disk == set(manifest["files"]), "data/ and MANIFEST.json list different files: run `make data`"
    for name, entry in manifest["files"].items():
        assert sha256(root / name) == entry["sha256"], f"{name} changed since the manifest was written"


def test_data_stays_small(manifest):
    assert sum(f["bytes"] for f in manifest["files"].values()) < 30 * 2**20


def test_compare_manifests_notices_what_matters(manifest):
    assert compare_manifests(manifest, copy.deepcopy(manifest)) == []
    changed = copy.deepcopy(manifest)
    changed["models"]["tiny-llama"]["validation_loss"] *= 1.2
    name = next(n for n in changed["files"] if n.endswith(".jsonl"))
    changed["files"][name]["sha256"] = "0" * 64
    problems = compare_manifests(manifest, changed)
    assert any("validation_loss" in p for p in problems) and any(name in p for p in problems)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-llama-student"])
def test_embedded_models_load_and_write_stories(name, manifest):
    from course_utils.data_build.tiny_models import sample_text
    from course_utils.ground.sources import load_causal_lm

    model, tokenizer = load_causal_lm(name, verbose=False)
    assert model.config.architectures == [manifest["models"][name]["architecture"]]
    text = sample_text(model, tokenizer, "Once upon a time, there was", max_new_tokens=30)
    assert " named " in text and text.count(".") >= 1


def test_teacher_beats_its_student(manifest):
    models = manifest["models"]
    assert models["tiny-llama"]["parameters"] > models["tiny-llama-student"]["parameters"]
    assert models["tiny-llama"]["validation_loss"] < models["tiny-llama-student"]["validation_loss"]


@pytest.mark.slow
def test_rebuild_reproduces_the_committed_data(tmp_path, manifest):
    rebuilt = build_all(tmp_path / "data", progress=False)
    assert compare_manifests(manifest, rebuilt) == []
    # Everyone can read what the build writes (the grader's sandbox runs as another user).
    unreadable = [str(p.relative_to(tmp_path)) for p in (tmp_path / "data").rglob("*") if p.is_file()
                  and not p.stat().st_mode & 0o004]
    assert not unreadable, f"files only their owner can read: {unreadable}"


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-llama-student"])
def test_every_weight_dimension_is_a_multiple_of_64(name):
    # Real checkpoints have such shapes, and kernels that tile matrices take other code paths on odd ones
    # (bitsandbytes' packed 4-bit CPU kernel asserts that every output dimension divides by 32).
    from transformers.pytorch_utils import Conv1D

    from course_utils.data_build.tiny_models import MULTIPLE_OF
    from course_utils.ground.sources import load_causal_lm

    model, _ = load_causal_lm(name, verbose=False)
    layers = {n: m.weight.shape for n, m in model.named_modules() if isinstance(m, torch.nn.Linear | Conv1D)}
    assert len(layers) > 4
    odd = {n: tuple(s) for n, s in layers.items() if any(d % MULTIPLE_OF for d in s)}
    assert not odd, f"{name}: weights with a dimension that is not a multiple of {MULTIPLE_OF}: {odd}"
    assert model.config.vocab_size % MULTIPLE_OF == 0
