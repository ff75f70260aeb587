"""Models: what is inside one and what it costs to hold (the from-scratch GPT, Llama pieces, Auto classes, KV cache, anatomy, specs, memory, speculative decoding)."""
