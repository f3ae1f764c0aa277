"""The ``[[products]]`` list: the products (recipes) a line makes, each with its calibrated gallery."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from inspector.config.base import StrictModel
from inspector.core.names import PRODUCT_NAME_PATTERN


class ProductConfig(StrictModel):
    """One product: every camera inspecting it scores against its gallery."""

    name: str = Field(
        pattern=PRODUCT_NAME_PATTERN,
        description="Unique name, as the PLC and the verdicts spell it: letters, digits, _ . and -, at most 64.",
    )
    gallery: Path = Field(description="Calibrated gallery file of this product.")
