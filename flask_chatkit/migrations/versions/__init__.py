"""The ``chatkit`` branch: one script per revision, oldest first."""
