"""K2: exchange trades into a ClickHouse medallion and an Iceberg cold tier."""

__all__ = ["__version__"]

__version__ = "0.1.0"
