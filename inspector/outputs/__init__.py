"""Outputs after the bus: defect archive, results endpoint, live view and score drift, each a pipeline sink."""
