"""The user's side: ``gk submit`` (build, sign, log and verify an action; print the bundle) and
``gk ssh`` (submit, then run the command over SSH with the bundle). See docs/client.md."""
