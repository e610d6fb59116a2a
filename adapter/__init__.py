"""On-premise integration adapter: HIS events to Tamin e-prescription and DITAS/SEPAS."""

__version__ = "0.1.0"
