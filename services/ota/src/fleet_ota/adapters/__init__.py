"""MongoDB repositories, the outbox relay and the Tuya OpenAPI use of ota."""
