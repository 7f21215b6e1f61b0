"""Currencies (ISO 4217, minor-unit exponents, Stripe zero- and three-decimal lists) and Money."""
