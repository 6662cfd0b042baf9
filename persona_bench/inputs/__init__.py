"""What a job asks: questions (sources, identities, samples, shards), roles and templates (the
personas), and the prompts that put a persona before a question."""
