"""The agent: samples a server and publishes to Kafka (collectors, spool, publisher)."""
