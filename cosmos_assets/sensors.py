"""Sensors that start runs when new renders and prompts land (filled in by the sensors work)."""

import dagster as dg

ALL_SENSORS: list[dg.SensorDefinition] = []
