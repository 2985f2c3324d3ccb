"""The generation run machinery every endpoint shares: options resolved once, the plan (n fan-out),
the run over the engine streams, choices, output rendering, sampling, logprobs and usage figures."""
