"""Evaluation engine: method interface, metrics (FID/KID, identity across poses, pose accuracy,
3D accuracy, speed), the ``digan-bench run`` benchmark and its result records."""
