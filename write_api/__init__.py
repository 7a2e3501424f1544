"""The write API: validates commands and appends their events to Kafka."""
