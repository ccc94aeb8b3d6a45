"""Unified accounts (R7–R9): registration, sign-in, tokens, 户号 binding, real-name, back office."""
