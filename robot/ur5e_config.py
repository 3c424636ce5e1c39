"""Validated settings of the UR5e driver: address, connect timeouts, reconnects and servoJ parameters.

Units: seconds, hertz, radians per second; the speed slider is a fraction of full speed.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field

from robot.safety import SafetyLimits
from robot.ur5e_errors import InvalidAddressError

#: servoJ lookahead time range allowed by the controller, seconds.
LOOKAHEAD_RANGE_S: tuple[float, float] = (0.03, 0.2)
#: servoJ proportional gain range allowed by the controller.
GAIN_RANGE: tuple[float, float] = (100.0, 2000.0)
#: Speed slider range the driver allows (fraction of full speed).
SPEED_SLIDER_RANGE: tuple[float, float] = (0.01, 1.0)


def validate_host(host: str) -> str:
    """`host` as a normalised IP address string; InvalidAddressError naming the value otherwise."""
    try:
        return str(ipaddress.ip_address(host.strip()))
    except (ValueError, AttributeError):
        raise InvalidAddressError(
            f"robot address {host!r} is not a valid IPv4 or IPv6 address (e.g. 192.168.1.10)"
        ) from None


def clamp_speed_slider(fraction: float) -> float:
    """The speed slider fraction clamped to [0.01, 1]; ValueError for NaN/inf."""
    if not math.isfinite(fraction):
        raise ValueError(f"speed slider must be a finite fraction within [0.01, 1], got {fraction}")
    return min(max(float(fraction), SPEED_SLIDER_RANGE[0]), SPEED_SLIDER_RANGE[1])


@dataclass(frozen=True)
class ServoConfig:
    """servoJ streaming.

    frequency_hz: servo loop rate (the e-series controller runs at 500 Hz); lookahead_time_s: seconds within
    [0.03, 0.2] that smooth the trajectory; gain: proportional gain within [100, 2000]; watchdog_min_hz: the RTDE
    watchdog stops the controller script when inputs arrive slower than this; stop_deceleration: rad/s² of
    servoStop.
    """

    frequency_hz: float = 500.0
    lookahead_time_s: float = 0.1
    gain: float = 300.0
    watchdog_min_hz: float = 10.0
    stop_deceleration: float = 10.0

    def __post_init__(self) -> None:
        lo, hi = LOOKAHEAD_RANGE_S
        if not lo <= self.lookahead_time_s <= hi:
            raise ValueError(f"lookahead_time_s must be within [{lo}, {hi}] s, got {self.lookahead_time_s}")
        g_lo, g_hi = GAIN_RANGE
        if not g_lo <= self.gain <= g_hi:
            raise ValueError(f"gain must be within [{g_lo:g}, {g_hi:g}], got {self.gain}")
        if not 1.0 <= self.frequency_hz <= 500.0:
            raise ValueError(f"frequency_hz must be within [1, 500] Hz, got {self.frequency_hz}")
        if not 1.0 <= self.watchdog_min_hz <= self.frequency_hz:
            raise ValueError(f"watchdog_min_hz must be within [1, frequency_hz] Hz, got {self.watchdog_min_hz}")
        if not 0.0 < self.stop_deceleration <= 40.0:
            raise ValueError(f"stop_deceleration must be within (0, 40] rad/s², got {self.stop_deceleration}")

    @property
    def period_s(self) -> float:
        """Seconds per servo tick."""
        return 1.0 / self.frequency_hz


@dataclass(frozen=True)
class UR5eConfig:
    """Driver settings.

    host: the controller's IP address; connect_timeout_s: seconds each probe of the RTDE and dashboard ports may
    take; reconnect_tries: attempts after a lost connection (0 = none); reconnect_backoff_s: seconds before the
    first retry, doubled after each failure up to reconnect_backoff_max_s; speed_slider: fraction within
    [0.01, 1] (clamped); home_speed: rad/s of moveJ to the home pose; home_acceleration: rad/s²;
    tcp_offset: metres from the flange to the TCP along the flange z axis; safety: the limits every servo target
    passes; handle_signals: install SIGINT/SIGTERM handlers that stop the arm (then chain to the previous ones).
    """

    host: str
    connect_timeout_s: float = 2.0
    reconnect_tries: int = 3
    reconnect_backoff_s: float = 0.2
    reconnect_backoff_max_s: float = 2.0
    speed_slider: float = 0.5
    home_speed: float = 0.5
    home_acceleration: float = 0.8
    tcp_offset: float = 0.0
    servo: ServoConfig = field(default_factory=ServoConfig)
    safety: SafetyLimits = field(default_factory=SafetyLimits)
    handle_signals: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", validate_host(self.host))
        object.__setattr__(self, "speed_slider", clamp_speed_slider(self.speed_slider))
        if not 0.01 <= self.connect_timeout_s <= 60.0:
            raise ValueError(f"connect_timeout_s must be within [0.01, 60] s, got {self.connect_timeout_s}")
        if not 0 <= self.reconnect_tries <= 100:
            raise ValueError(f"reconnect_tries must be within 0..100, got {self.reconnect_tries}")
        if not 0.0 <= self.reconnect_backoff_s <= self.reconnect_backoff_max_s <= 60.0:
            raise ValueError(
                "reconnect backoff must satisfy 0 <= reconnect_backoff_s <= reconnect_backoff_max_s <= 60 s, got "
                f"{self.reconnect_backoff_s}, {self.reconnect_backoff_max_s}"
            )
        if not 0.0 < self.home_speed <= 1.05 or not 0.0 < self.home_acceleration <= 1.4:
            raise ValueError(
                f"home_speed must be within (0, 1.05] rad/s and home_acceleration within (0, 1.4] rad/s², got "
                f"{self.home_speed}, {self.home_acceleration}"
            )
        if not 0.0 <= self.tcp_offset <= 0.5:
            raise ValueError(f"tcp_offset must be within [0, 0.5] m, got {self.tcp_offset}")
