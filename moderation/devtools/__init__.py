"""Developer tooling: embedded stack, demo, chaos, bench, samples. Not the service."""
