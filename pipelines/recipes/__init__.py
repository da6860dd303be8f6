"""Dataset recipes: each turns one kind of input into work units for the store writer."""

from .sdk import build_sdk, plan_sdk, process_sdk_unit, sdk_units

__all__ = ["build_sdk", "plan_sdk", "process_sdk_unit", "sdk_units"]
