"""Demo data and demo business systems for the embedded mode (never in production)."""
