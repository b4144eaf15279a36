"""The exception hierarchy: one root, one subclass per boundary.

    ModerationError
    ├── ConfigError        settings or files that cannot be used as given
    ├── BundleError        model bundle missing, malformed or not loadable
    ├── PolicyError        policy file invalid (names the file, policy and field)
    ├── ImageError         an input image that cannot be decoded or breaks a limit
    ├── EncoderError       the encoder (Triton or in-process) failed to embed
    │   ├── EncoderUnavailable   the encoder cannot be reached right now (retry later)
    │   └── RejectedImage        (encoders.py) Triton refused one input as bad
    ├── InputError         (events.py) an upload event that can never be decided
    ├── FetchError         (fetch.py) an image_url that cannot or may not be fetched
    ├── StoreError         (store.py) Redis unreachable, or no policy set applied yet
    └── BrokerError        (kafka_io.py) the Kafka cluster refused or is unreachable
"""


class ModerationError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(ModerationError):
    pass


class BundleError(ModerationError):
    pass


class PolicyError(ModerationError):
    pass


class ImageError(ModerationError):
    """Bad input image; ``reason`` is a stable machine-readable error type."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class EncoderError(ModerationError):
    pass


class EncoderUnavailable(EncoderError):
    pass
