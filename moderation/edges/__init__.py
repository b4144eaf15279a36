"""The edges: Kafka, Redis, the Triton client, URL fetching, HTTP endpoints, metrics."""
