"""Fine-tuning: adapters on a frozen base (LoRA, NF4 quantization, SFT data and evaluation, trainer callbacks, Unsloth, launching)."""
