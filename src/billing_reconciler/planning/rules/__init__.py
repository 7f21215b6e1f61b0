"""The diff's rules, one module per kind of object (DESIGN §4, §5)."""
