"""Storage and formats: how a model lies on disk and travels (safetensors, compression, sharing, GGUF)."""
