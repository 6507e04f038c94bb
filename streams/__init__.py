"""Faust/Kafka side of logad: agents, topics, tables and client settings (may import faust/aiokafka)."""
