"""train (level 2): a tiny model trains a few LoRA steps on the best device present and its loss falls."""

from __future__ import annotations

import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

from llmlab.verify.context import VerifyContext
from llmlab.verify.result import CheckResult, check, fail, ok, skip

SMOKE_STEPS = 8


@check(
    "train.smoke", "a tiny LoRA fine-tune runs a few steps and its loss falls (llmlab.train.smoke)", level=2
)
def smoke(ctx: VerifyContext) -> CheckResult:
    run_smoke = ctx.sources.smoke()
    if run_smoke is None:
        return skip("the training package (llmlab.train.smoke) is not available in this build")
    # The trainer prints its logs; stdout belongs to verify's table or JSON, so they go to stderr.
    with tempfile.TemporaryDirectory(prefix="llmlab-verify-smoke-") as workdir, redirect_stdout(sys.stderr):
        report = run_smoke(Path(workdir), steps=SMOKE_STEPS, host=ctx.config)
    initial, final = float(report["initial_loss"]), float(report["final_loss"])
    where = f"on {report['device']} ({report['seconds']:.1f} s)"
    message = f"loss {initial:.3f} -> {final:.3f} in {SMOKE_STEPS} steps {where}"
    kw = {
        "value": round(final, 4),
        "expected": f"< {initial:.4f}",
        "items": {"initial_loss": initial, "seconds": report["seconds"]},
    }
    if not final < initial:
        return fail(
            message + ": the loss did not fall",
            hint="see the device checks (gpu.*) and software.min_versions; a tiny model must learn",
            **kw,
        )
    return ok(message, **kw)
