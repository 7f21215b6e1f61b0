"""A stateful, local emulator of the Stripe API over real HTTP (DESIGN §9)."""
