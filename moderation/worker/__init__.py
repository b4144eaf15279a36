"""The streaming worker: consumer loop, batch pipeline, outbox, health, wiring."""
