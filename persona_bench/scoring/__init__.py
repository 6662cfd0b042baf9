"""Scoring a batch of requests with a loaded transformers model: the request/result contract,
answer labels as tokens, letter and cloze scoring from logits, generation and the parser that reads
an answer out of generated text, and persona perplexity."""
