"""The main job's parts (``scripts/demo``): the step runner's console and steps, and the simulated iOS
app. Run from the source tree; not installed by the wheel (see pyproject.toml)."""
