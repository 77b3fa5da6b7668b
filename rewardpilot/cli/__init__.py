"""The ``rewardpilot`` command line."""
