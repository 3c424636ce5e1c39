"""Subcommands of `sam2grasp` for camera-to-base calibration."""

from __future__ import annotations

import argparse
import textwrap

from pipeline.cli_common import print_json

_EPILOG = textwrap.dedent(
    """\
    examples:
      sam2grasp calibrate --sim --out out/calibration.json
          calibrate the simulated cell's camera (board on the flange, 12 arm poses) and report the error
          against the camera's true pose
      sam2grasp calibrate --sim --poses 20 --seed 3 --out out/cal.json --json
          more poses, another scene seed, one JSON object on stdout
      sam2grasp calibrate --robot-ip 192.168.1.10 --poses-file cell/calib_poses.json --out cell/calibration.json
          the real cell: the UR5e moves through the taught poses, the RealSense sees the board on the flange
      sam2grasp calibrate --check out/calibration.json --serial 123456789012
          validate a calibration file (rotation, units, version, camera serial) and print it

    The routine (robot.calibration_routine.run_calibration) takes the arm and the camera as parameters; on the
    real cell (--robot-ip, --poses-file) it runs with the UR5e visiting taught poses and the RealSense camera.
    """
)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    if args.check:
        return _check(args)
    if args.out is None:
        raise ValueError("--out FILE is required: where to write the calibration")
    if not args.sim:
        return _calibrate_real(args)
    if not 4 <= args.poses <= 100:
        raise ValueError(f"--poses must be within 4..100, got {args.poses}")
    from robot.calibration import save_calibration
    from robot.calibration_routine import pose_error, run_calibration
    from robot.calibration_sim import SIM_SERIAL, SimBoardCell

    with SimBoardCell(seed=args.seed) as cell:
        poses = cell.board_facing_poses(args.poses, seed=args.seed)
        run = run_calibration(cell, cell, poses, SIM_SERIAL)
        err_mm, err_deg = pose_error(run.calibration.T_base_camera, cell.true_camera_pose())
    path = save_calibration(args.out, run.calibration)
    report = {
        "file": str(path),
        "camera_serial": run.calibration.camera_serial,
        "views_used": run.views_used,
        "poses_visited": run.poses_visited,
        "reprojection_rms_px": run.calibration.reprojection_rms_px,
        "error_translation_mm": err_mm,
        "error_rotation_deg": err_deg,
        "T_base_camera": run.calibration.to_json()["T_base_camera"],
    }
    if args.json:
        print_json(report)
    else:
        print(
            f"calibrated {run.calibration.camera_serial} from {run.views_used}/{run.poses_visited} views: "
            f"reprojection RMS {run.calibration.reprojection_rms_px:.3f} px; error against the true camera pose "
            f"{err_mm:.2f} mm, {err_deg:.3f} deg; written to {path}"
        )
    return 0


def _calibrate_real(args: argparse.Namespace) -> int:
    """The real cell: the UR5e visits the taught poses, the RealSense sees the board on the flange."""
    if not args.robot_ip or not args.poses_file:
        raise ValueError(
            "the real cell needs --robot-ip IP and --poses-file FILE (taught joint poses, radians); "
            "or pass --sim to calibrate the simulated cell"
        )
    from robot.calibration import save_calibration
    from robot.calibration_routine import run_calibration
    from robot.calibration_ur5e import UR5ePoseSource, load_pose_file
    from robot.realsense import RealSenseCamera
    from robot.ur5e import UR5e
    from robot.ur5e_config import UR5eConfig

    poses = load_pose_file(args.poses_file)  # checked before anything connects
    with UR5e(UR5eConfig(host=args.robot_ip)) as robot, RealSenseCamera(serial=args.camera_serial) as camera:
        run = run_calibration(UR5ePoseSource(robot), camera, poses, camera.serial, settle_s=0.5)
        robot.move_home()
    path = save_calibration(args.out, run.calibration)
    cal = run.calibration
    report = {
        "file": str(path),
        "camera_serial": cal.camera_serial,
        "views_used": run.views_used,
        "poses_visited": run.poses_visited,
        "reprojection_rms_px": cal.reprojection_rms_px,
    }
    if args.json:
        print_json(report)
    else:
        print(
            f"calibrated {run.calibration.camera_serial} from {run.views_used}/{run.poses_visited} views: "
            f"reprojection RMS {run.calibration.reprojection_rms_px:.3f} px; written to {path}"
        )
    return 0


def _check(args: argparse.Namespace) -> int:
    from robot.calibration import load_calibration

    cal = load_calibration(args.check, expected_serial=args.serial)
    if args.json:
        print_json({"file": args.check, "valid": True, **cal.to_json()})
    else:
        t = cal.T_base_camera[:3, 3]
        print(
            f"{args.check}: valid calibration of camera {cal.camera_serial} ({cal.date}, {cal.n_views} views, "
            f"RMS {cal.reprojection_rms_px:.3f} px); camera at ({t[0]:.3f}, {t[1]:.3f}, {t[2]:.3f}) m in the base frame"
        )
    return 0


def add_calibrate_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register this module's subcommands on `sub`."""
    p = sub.add_parser(
        "calibrate",
        help="camera-to-base calibration with a ChArUco board on the flange (or check a calibration file)",
        description="Solve the fixed camera's pose in the robot base frame from views of a ChArUco board carried "
        "by the arm, and write it as a versioned JSON calibration file.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sim", action="store_true", help="calibrate the simulated cell's camera")
    p.add_argument("--out", default=None, help="calibration file to write")
    p.add_argument("--poses", type=int, default=12, help="arm poses to visit, 4..100 (default 12)")
    p.add_argument("--seed", type=int, default=0, help="scene and pose seed of the simulated cell (default 0)")
    p.add_argument("--robot-ip", default=None, help="real cell: the UR5e controller's IP address")
    p.add_argument("--poses-file", default=None, help='real cell: JSON {"poses": [[6 joint angles, rad], ...]}')
    p.add_argument("--camera-serial", default=None, help="real cell: RealSense serial (default: the only one)")
    p.add_argument("--check", metavar="FILE", default=None, help="validate a calibration file instead")
    p.add_argument("--serial", default=None, help="with --check: the camera serial the file must be for")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_calibrate)
