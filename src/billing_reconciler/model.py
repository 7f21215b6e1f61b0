"""Normalized, comparable records of managed objects: what desired and observed state become."""
