from engagement.settings import Settings


def test_secrets_are_comma_separated_and_never_shown(monkeypatch):
    # Values no setting's name contains, so that repr cannot hold them by chance.
    monkeypatch.setenv("ENGAGEMENT_WEBHOOK_SECRETS", " s3cr3t-1 , s3cr3t-2,,")
    settings = Settings()
    assert [s.get_secret_value() for s in settings.webhook_secrets] == [
        "s3cr3t-1",
        "s3cr3t-2",
    ]
    assert "s3cr3t" not in repr(settings)


def test_a_configured_broker_replaces_the_local_one(monkeypatch):
    monkeypatch.setenv("ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    settings = Settings()
    assert settings.bootstrap_servers == "kafka:9092"
    assert not settings.uses_local_broker


def test_the_local_broker_is_the_default(monkeypatch):
    monkeypatch.delenv("ENGAGEMENT_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("ENGAGEMENT_BROKER_PORT", "19092")
    assert Settings().bootstrap_servers == "127.0.0.1:19092"
