"""The project's errors: one base class, so a caller can catch them all.

EngagementError
├── ConfigurationError   a setting is missing or inconsistent
├── BrokerError          the local Kafka broker cannot be assembled or run
└── KafkaUnavailable     the configured broker does not answer
"""


class EngagementError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigurationError(EngagementError):
    """A setting is missing or wrong; the message says which and how to fix it."""


class BrokerError(EngagementError):
    """The local Kafka broker could not be assembled, started or stopped."""


class KafkaUnavailable(EngagementError):
    """The broker named by the settings did not answer in time."""
