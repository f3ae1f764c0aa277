"""The OPC UA server PLCs and SCADA read results, state and line commands from (asyncua)."""
