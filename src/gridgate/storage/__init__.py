"""Storage: database engines and sessions, migrations, encryption of data at rest."""
