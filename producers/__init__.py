"""What puts AlpaClass events on Kafka: the webhook receiver, backfill, a simulator."""
