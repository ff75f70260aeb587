"""Serving: a fine-tuned model saved every way it can leave the workbook (adapter, merged, GGUF, Hub) and run in llama.cpp."""
