"""The fault suite: worker processes loop on one lock and write to a fenced
register while the test injects faults; the recorded history is checked.
See ``docs/reliability.md``."""
