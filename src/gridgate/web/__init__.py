"""ASGI pieces every listener shares: trace ids, body limits, health and metrics endpoints."""
