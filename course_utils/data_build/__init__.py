"""Generators for everything in data/: story corpus, Zorbish instructions, tokenizer, tiny checkpoints."""


def build_all(*args, **kwargs):
    """Rebuild data/ (see :func:`course_utils.data_build.build.build_all`)."""
    from course_utils.data_build.build import build_all as _build_all

    return _build_all(*args, **kwargs)
