"""Back-office operators, their roles, and the audit trail of every admin change."""
