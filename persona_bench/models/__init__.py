"""Models: loading (the one from_pretrained, hub / local / PyPI GGUF, dtypes, bitsandbytes), devices
and GPU claims, memory and compute cost, and the fast paths applied after loading."""
