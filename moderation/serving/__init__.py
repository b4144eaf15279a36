"""Code that runs inside Triton's python backend."""
