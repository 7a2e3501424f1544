"""What every merlin service shares: settings, Kafka clients and topics, HTTP plumbing, positions,
errors, logs.

Imports only ``domain``; every service imports it.
"""
