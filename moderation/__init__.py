"""Streaming image moderation with CLIP-style encoders served by Triton."""

__version__ = "0.1.0"
