"""Recipes: locks, groups, elections, written once on the backend primitives."""
