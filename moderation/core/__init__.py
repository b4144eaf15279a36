"""The pure core: offsets, batching, scoring, policies, image checks. No I/O."""
