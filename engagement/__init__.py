"""alpaclass-engagement: what the receiver, the worker and analytics share."""
