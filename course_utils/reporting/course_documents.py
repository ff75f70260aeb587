"""The five course documents this workbook is built from, under the names a reader sees them by.

Tables that set a document's claim beside a measurement name their source with these labels, so that every
notebook, table and doc calls each document the same way.
"""

from __future__ import annotations

EXAM_NOTES = "exam-question notes"  # "Unused Exam Questions" (CS 668 Doc 19): saving, loading, LoRA/QLoRA, Unsloth
REPOSITORY_GUIDE = "learning-repository guide"  # the LLM learning-repository guide: formats, GPUs, llama.cpp, vLLM
PRETRAINING_LECTURE = "pretraining lecture"  # "Pre-Training" (CS 668 Doc 15): structure, distillation, training
MODULE_NOTEBOOK = "LLM module notebook"  # "Module 18: Large Language Models": scaling, quantization, KV cache
WORKSHOP_GUIDE = "workshop guide"  # "Training LLMs from Base Models": NF4, LoRA, data, training, deployment

ALL = (EXAM_NOTES, REPOSITORY_GUIDE, PRETRAINING_LECTURE, MODULE_NOTEBOOK, WORKSHOP_GUIDE)


def cite(*documents: str) -> str:
    """One or more documents as a table's source column reads them: ``"LLM module notebook, workshop guide"``."""
    unknown = [d for d in documents if d not in ALL]
    if unknown or not documents:
        raise ValueError(f"cite() takes labels from course_documents.ALL {ALL}; got {documents!r}")
    return ", ".join(documents)
