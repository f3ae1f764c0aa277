"""Configuration: one pydantic section per module, importing nothing from the runtime."""
