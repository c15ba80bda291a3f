"""roac's shared package: message schemas, RabbitMQ topology, settings, database, metrics."""
