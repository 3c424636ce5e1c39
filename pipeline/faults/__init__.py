"""Fault-injection scenarios shared by tests/test_faults_*.py and bench/faults.py: camera, tracker, policy, robot
and process faults, each run through the real runtime or the real drivers against the simulated cell or the
project's test doubles, each reporting a `ScenarioResult` (end state, reason, time to safe stop, data intact,
commands outside the safety limits).

The scenario modules import the simulated cell (MuJoCo); import them directly:
`pipeline.faults.perception`, `pipeline.faults.policy_faults`, `pipeline.faults.robot_faults`,
`pipeline.faults.process`.
"""

from pipeline.faults.core import LimitChecker, RecordingRobot, ScenarioResult

__all__ = ["LimitChecker", "RecordingRobot", "ScenarioResult"]
