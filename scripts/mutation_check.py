"""Make each one-line AutoMix mistake on purpose and see which test catches it.

Every mutation is applied to a COPY of ``automix/`` and ``tests/`` in a temporary folder, never to the
working tree, and pytest runs there with PYTHONPATH pointing at the copy (so other people testing in
the tree are not disturbed, and an interrupted run leaves nothing behind). Prints a table: mutation,
file, the first test that failed (or MISSED). Usage::

    python scripts/mutation_check.py                    # every mutation, golden + core tests, stop at first failure
    python scripts/mutation_check.py --only M01 M13     # some mutations
    python scripts/mutation_check.py --tests tests/test_routing.py tests/test_mixing.py   # other tests
    python scripts/mutation_check.py --all-failures     # list every failing test, not only the first (slow)

A mutation whose text is not found (the code moved on) is reported as NOT APPLIED, with its file.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORE_TESTS = ["tests/test_golden_ops.py", "tests/test_golden_automix.py", "tests/test_golden_step.py",
              "tests/test_mixing.py", "tests/test_routing.py", "tests/test_schedules.py", "tests/test_mixblock.py"]


@dataclass(frozen=True)
class Mutation:
    key: str
    what: str  # the mistake, in words
    file: str  # relative to the repository
    edits: tuple[tuple[str, str], ...]  # (exact old text, new text); each old text must occur once


def _m(key: str, what: str, file: str, *edits: tuple[str, str]) -> Mutation:
    return Mutation(key, what, file, tuple(edits))


MUTATIONS = [
    # --- the Mix Block (spec step 3)
    _m("M01", "softmax over i's positions instead of j's", "automix/mixblock.py",
       ("/ math.sqrt(self.inter), dim=-1)", "/ math.sqrt(self.inter), dim=1)")),
    _m("M02", "attention scale 1/sqrt(C) instead of 1/sqrt(C/2)", "automix/mixblock.py",
       ("/ math.sqrt(self.inter), dim=-1)", "/ math.sqrt(2 * self.inter), dim=-1)")),
    _m("M03", "value from z_i instead of z_j", "automix/mixblock.py",
       ("v = self.v(z_j.float())", "v = self.v(z_i.float())")),
    _m("M04", "key from z_i instead of z_j", "automix/mixblock.py",
       ("k = self.qk(z_j.float())", "k = self.qk(z_i.float())")),
    _m("M05", "lambda channel: 1 - lam with z_i, lam with z_j", "automix/mixblock.py",
       ("z_i.new_full((n, 1, h, w), lam)", "z_i.new_full((n, 1, h, w), 1.0 - lam)"),
       ("z_j.new_full((n, 1, h, w), 1.0 - lam)", "z_j.new_full((n, 1, h, w), lam)")),
    _m("M06", "Mix Block returns the mask of x_i (1 - s) instead of s", "automix/mixblock.py",
       ("return torch.sigmoid(a)", "return 1.0 - torch.sigmoid(a)")),
    _m("M43", "upsampling by a hard-coded factor 4", "automix/mixblock.py",
       ('return F.interpolate(a, size=image_size, mode="nearest")',
        'return F.interpolate(a, scale_factor=4, mode="nearest")')),
    _m("M07", "bilinear instead of nearest upsampling by default", "automix/config.py",
       ('upsample: Literal["nearest", "bilinear"] = "nearest"',
        'upsample: Literal["nearest", "bilinear"] = "bilinear"')),
    # --- mixing ops (steps 1, 4, 6)
    _m("M08", "x[perm] mixed into x the wrong way: s x + (1 - s) x[perm]", "automix/mixing.py",
       ("return x + mask * (x[perm] - x)", "return x[perm] + mask * (x - x[perm])")),
    _m("M09", "mixup CE: lam with y[perm], 1 - lam with y", "automix/mixing.py",
       ("return lam * F.cross_entropy(logits, y) + (1.0 - lam) * F.cross_entropy(logits, y[perm])",
        "return lam * F.cross_entropy(logits, y[perm]) + (1.0 - lam) * F.cross_entropy(logits, y)")),
    _m("M10", "mask loss against 1 - lam (batch mode)", "automix/mixing.py",
       ("(mask_x.float().mean() - lam).abs()", "(mask_x.float().mean() - (1.0 - lam)).abs()")),
    _m("M11", "per-sample mask loss uses the batch share", "automix/mixing.py",
       ("share = mask_x.float().flatten(1).mean(dim=1)", "share = mask_x.float().mean().expand(mask_x.shape[0])")),
    _m("M12", "lam ~ Beta(2 alpha, 2 alpha)", "automix/mixing.py",
       ("rng.beta(alpha, alpha)", "rng.beta(2 * alpha, 2 * alpha)")),
    _m("M13", "lam ~ Uniform(0, 1)", "automix/mixing.py", ("rng.beta(alpha, alpha)", "rng.uniform()")),
    _m("M14", "cutmix lam = box area instead of 1 - box area", "automix/mixing.py",
       ("lam_adjusted = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)",
        "lam_adjusted = (y1 - y0) * (x1 - x0) / float(height * width)")),
    # --- the AutoMix step (steps 2-6)
    _m("M15", "mask from q's features instead of k's", "automix/model.py",
       ("z = self.k.backbone.stage3(x)", "z = self.q.backbone.stage3(x)")),
    _m("M16", "bb mask not detached", "automix/model.py",
       ("            with torch.no_grad():\n                s_bb = self.mixblock(",
        "            if True:\n                s_bb = self.mixblock(")),
    _m("M17", "lam margin: < instead of <=", "automix/model.py",
       ("if d.lam_bb <= margin or 1.0 - d.lam_bb <= margin:", "if d.lam_bb < margin or 1.0 - d.lam_bb < margin:")),
    _m("M18", "lam margin: only the lam_bb <= margin side", "automix/model.py",
       ("if d.lam_bb <= margin or 1.0 - d.lam_bb <= margin:", "if d.lam_bb <= margin:")),
    _m("M19", "lam margin fallback: x keeps 1 - lam_bb", "automix/model.py",
       ("s_bb = mixing.mixup_mask(d.lam_bb, s_mb)", "s_bb = mixing.mixup_mask(1.0 - d.lam_bb, s_mb)")),
    _m("M20", "bb Mix Block call with lam_mb", "automix/model.py",
       ("self.mixblock(z, d.lam_bb, d.perm_bb, size)", "self.mixblock(z, d.lam_mb, d.perm_bb, size)")),
    _m("M21", "L_mix_q: 1 - lam_bb with y", "automix/model.py",
       ('y, d.perm_bb, d.lam_bb)', 'y, d.perm_bb, 1.0 - d.lam_bb)')),
    _m("M22", "L_mix_k: 1 - lam_mb with y", "automix/model.py",
       ('y, d.perm_mb, d.lam_mb)', 'y, d.perm_mb, 1.0 - d.lam_mb)')),
    _m("M23", "L_mask on mean(s) instead of mean(1 - s)", "automix/model.py",
       ("mixing.mask_loss(1.0 - s_mb, d.lam_mb", "mixing.mask_loss(s_mb, d.lam_mb")),
    _m("M24", "L_mix_q second label with perm_mb", "automix/model.py",
       ('y, d.perm_bb, d.lam_bb)', 'y, d.perm_mb, d.lam_bb)')),
    _m("M25", "mb images mixed with 1 - s", "automix/model.py",
       ("x_mix_mb = mixing.mix(x, s_mb, d.perm_mb)", "x_mix_mb = mixing.mix(x, 1.0 - s_mb, d.perm_mb)")),
    _m("M26", "bb images mixed with perm_mb", "automix/model.py",
       ("x_mix_bb = mixing.mix(x, s_bb, d.perm_bb)", "x_mix_bb = mixing.mix(x, s_bb, d.perm_mb)")),
    _m("M27", "L_mix_k through q instead of k", "automix/model.py",
       ('self.k(x_mix_mb, "mix")', 'self.q(x_mix_mb, "mix")')),
    _m("M28", "L_mix_q with the one-hot head", "automix/model.py",
       ('self.q(x_mix_bb, "mix")', 'self.q(x_mix_bb, "one")')),
    _m("M29", "L_one_q on the bb-mixed images", "automix/model.py",
       ('F.cross_entropy(self.q(x, "one").float(), y)', 'F.cross_entropy(self.q(x_mix_bb, "one").float(), y)')),
    _m("M30", "lam_bb drawn from Beta(2 alpha, 2 alpha)", "automix/model.py",
       ("lam_bb=mixing.sample_lam(alpha, rng)", "lam_bb=mixing.sample_lam(2 * alpha, rng)")),
    _m("M31", "mixup baseline: x keeps 1 - lam", "automix/model.py",
       ("torch.full((1, 1, 1, 1), 1.0 - lam, device=device)", "torch.full((1, 1, 1, 1), lam, device=device)")),
    _m("M32", "baselines: 1 - lam with y", "automix/model.py",
       ("y, d.perm, d.lam)", "y, d.perm, 1.0 - d.lam)")),
    # --- optimizer step, EMA, schedules (steps 7, "Schedules")
    _m("M33", "EMA before the SGD step", "automix/stepper.py",
       ("        if self._optimizer_step():\n            self.lr_sched.step()\n            if self.ema is not None:\n"
        "                self.momentum = self.sched.momentum(t)\n                self.ema.update(self.momentum)\n",
        "        if self.ema is not None:\n            self.momentum = self.sched.momentum(t)\n"
        "            self.ema.update(self.momentum)\n"
        "        if self._optimizer_step():\n            self.lr_sched.step()\n")),
    _m("M34", "EMA with m(t + 1)", "automix/stepper.py",
       ("self.momentum = self.sched.momentum(t)", "self.momentum = self.sched.momentum(t + 1)")),
    _m("M35", "EMA weights swapped: k <- (1 - m) k + m q", "automix/ema.py",
       ("torch._foreach_lerp_(self.target, self.source, 1.0 - momentum)",
        "torch._foreach_lerp_(self.target, self.source, momentum)")),
    _m("M36", "no momentum warm-up", "automix/schedules.py", ("if t < warmup * total:", "if t < 0:")),
    _m("M37", "trainer ignores automix.momentum_warmup", "automix/stepper.py",
       ("a.momentum_end, a.momentum_warmup)", "a.momentum_end)")),
    _m("M38", "mask-loss weight of step t + 1", "automix/stepper.py",
       ("self.mask_weight = self.sched.mask_weight(t)", "self.mask_weight = self.sched.mask_weight(t + 1)")),
    _m("M39", "mask-loss decay compounds (the reference's defect)", "automix/schedules.py",
       ("return cosine(t, total, w0, 0.0)", "return w0 * 0.99 ** t")),
    _m("M40", "Mix Block LR anneals to optim.min_lr", "automix/optim.py",
       ("cosine_lr_factor(o.mixblock_lr, o.mixblock_min_lr,", "cosine_lr_factor(o.mixblock_lr, o.min_lr,")),
    _m("M41", "LR scheduler never stepped", "automix/stepper.py",
       ("            self.lr_sched.step()\n", "            pass\n")),
    _m("M44", "no weight decay", "automix/optim.py",
       ("weight_decay=o.weight_decay, nesterov", "weight_decay=0.0, nesterov")),
    _m("M45", "Nesterov momentum", "automix/optim.py", ("nesterov=o.nesterov)", "nesterov=True)")),
    _m("M42", "cosine runs backwards (1 - cos)", "automix/schedules.py",
       ("return end + (start - end) * (1.0 + math.cos(math.pi * progress)) / 2.0",
        "return end + (start - end) * (1.0 - math.cos(math.pi * progress)) / 2.0")),
]


def _copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".hypothesis")
    shutil.copytree(REPO / "automix", dest / "automix", ignore=ignore)
    shutil.copytree(REPO / "tests", dest / "tests", ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")


def _pytest(dest: Path, tests: list[str], stop_first: bool, timeout: int) -> tuple[int, str, float]:
    env = {**os.environ, "PYTHONPATH": str(dest), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", "--tb=no", *tests]
    if stop_first:
        cmd.insert(4, "-x")
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timeout", time.monotonic() - t0
    return done.returncode, done.stdout + done.stderr, time.monotonic() - t0


def _failed(output: str) -> list[str]:
    return [m.group(1).split(" - ")[0] for m in re.finditer(r"^(?:FAILED|ERROR) (\S+)", output, re.M)]


def _apply(text: str, m: Mutation) -> str | None:
    for old, new in m.edits:
        if text.count(old) != 1:
            return None
        text = text.replace(old, new)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="mutation keys (M01 ...)")
    parser.add_argument("--tests", nargs="*", default=CORE_TESTS, help="test files, relative to the repository")
    parser.add_argument("--all-failures", action="store_true", help="run every test, list every failure")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per pytest run")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.key in args.only]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mutation_check_") as tmp:
        dest = Path(tmp)
        _copy_tree(dest)
        probe = subprocess.run([sys.executable, "-c", "import automix; print(automix.__file__)"], cwd=dest,
                               env={**os.environ, "PYTHONPATH": str(dest)}, capture_output=True, text=True)
        if not probe.stdout.strip().startswith(str(dest)):
            print(f"error: the copy's automix is not the one imported ({probe.stdout.strip()})", file=sys.stderr)
            return 2
        rc, out, secs = _pytest(dest, args.tests, True, args.timeout)
        if rc != 0:
            print(f"error: the tests fail without any mutation ({secs:.0f}s):\n{out[-3000:]}", file=sys.stderr)
            return 2
        print(f"baseline: all pass ({secs:.0f}s)", flush=True)
        for m in chosen:
            path = dest / m.file
            original = path.read_text() if path.is_file() else None
            mutated = _apply(original, m) if original is not None else None
            if mutated is None:
                rows.append((m, "NOT APPLIED (text not found)", 0.0))
            else:
                try:
                    path.write_text(mutated)
                    rc, out, secs = _pytest(dest, args.tests, not args.all_failures, args.timeout)
                finally:
                    path.write_text(original)
                failed = _failed(out)
                if rc == 0:
                    verdict = "MISSED"
                elif failed:
                    verdict = ", ".join(failed)
                else:
                    verdict = f"pytest rc {rc}: {out.strip().splitlines()[-1] if out.strip() else ''}"
                rows.append((m, verdict, secs))
            print(f"{m.key} {m.what:55s} {rows[-1][1]}  ({rows[-1][2]:.0f}s)", flush=True)
    table = ["| key | file | mistake | caught by | s |", "|---|---|---|---|---|"]
    table += [f"| {m.key} | {m.file} | {m.what} | {v} | {s:.0f} |" for m, v, s in rows]
    print("\n".join(table))
    if args.out:
        Path(args.out).write_text("\n".join(table) + "\n")
    missed = [m.key for m, v, _ in rows if v == "MISSED"]
    print(f"{len(rows) - len(missed)} of {len(rows)} not missed; missed: {' '.join(missed) or 'none'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
