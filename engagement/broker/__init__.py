"""The project's own single-node Kafka broker, assembled from Maven Central jars."""

from engagement.broker.local import BrokerStatus, LocalBroker
from engagement.broker.probe import kafka_answers
from engagement.broker.toolchain import KAFKA_VERSION

__all__ = ["KAFKA_VERSION", "BrokerStatus", "LocalBroker", "kafka_answers"]
