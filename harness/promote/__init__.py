"""The diff-and-commit stage: the only path from a sandbox to the real systems."""

from harness.limits import Violation
from harness.promote.promotion import PromotionResult, promote
from harness.promote.recovery import Recovery, recover
from harness.promote.revert import revert
from harness.promote.rows import Conflict

__all__ = ["Conflict", "PromotionResult", "Recovery", "Violation", "promote",
           "recover", "revert"]
