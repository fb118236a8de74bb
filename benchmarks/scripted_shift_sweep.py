"""Do OOD severities cost a competent controller? Scripted success and drop rates per severity.

Runs the task's scripted controllers (cautious and aggressive) for ``--episodes`` seeds on ``id``
and on every severity of each work shift, with paired seeds (the same seeds in every split),
and prints one row per split. The catalogue is tuned so that the aggressive controller on
CupCarry drops clearly more at severity >= 3 of cup_mass, cup_friction and grip_force than in id.

    python benchmarks/scripted_shift_sweep.py --episodes 20 --task CupCarry
"""

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium
from tqdm import tqdm

import embodied
from embodied.envs.arm import CONTROL_DT
from embodied.registration import env_id
from embodied.rollout import rollout
from embodied.shifts import SHIFTS
from embodied.shifts.splits import OOD_SHIFTS, SEVERITIES

STYLES = ("cautious", "aggressive")


@dataclass
class Rates:
    episodes: int = 0
    successes: int = 0
    drops: int = 0
    physics_errors: int = 0
    success_steps: int = 0  # summed episode lengths of the successes

    def cell(self) -> str:
        n = max(self.episodes, 1)
        t = f"{self.success_steps / self.successes * CONTROL_DT:.1f}s" if self.successes else "-"
        return f"{self.successes / n:4.0%} {self.drops / n:4.0%} {t:>5}"


def run_split(env: gymnasium.Env, split: str, style: str, seeds: Sequence[int]) -> Rates:
    """Closed-loop episodes of the scripted controller; the seeds pair splits."""
    rates = Rates()
    policy = env.unwrapped.scripted_policy(style=style)
    for seed in seeds:
        last = rollout(env, policy, seed, options={"shift": split})
        info, steps = last.info, last.index
        rates.episodes += 1
        rates.successes += bool(info["is_success"])
        rates.success_steps += steps if info["is_success"] else 0
        rates.drops += bool(info["dropped"])
        rates.physics_errors += bool(info["physics_error"])
    return rates


def splits_for(shifts: Sequence[str], severities: Sequence[int]) -> list[str]:
    return ["id"] + [f"ood-{s}-{k}" for s in shifts for k in severities]


def main(argv: Sequence[str] | None = None) -> None:
    work = [s for s in OOD_SHIFTS if SHIFTS[s].work]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="CupCarry", choices=sorted(embodied.TASKS))
    parser.add_argument("--episodes", type=int, default=20, help="seeds per split and style")
    parser.add_argument("--shifts", nargs="+", default=work, choices=work, metavar="SHIFT")
    parser.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES))
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    bad = sorted(set(args.severities) - set(SEVERITIES))
    if bad:
        parser.error(f"severities must be in {list(SEVERITIES)}; got {bad}")

    env = gymnasium.make(env_id(args.task), obs_mode="state")
    seeds = range(args.episodes)
    splits = splits_for(args.shifts, args.severities)
    results: dict[tuple[str, str], Rates] = {}
    with tqdm(total=len(splits) * len(STYLES), disable=args.quiet, desc=args.task) as bar:
        for split in splits:
            for style in STYLES:
                results[split, style] = run_split(env, split, style, seeds)
                bar.update()
    env.close()

    width = max(len(s) for s in splits)
    print(f"{args.task}: success and drop rates over {args.episodes} paired seeds")
    print(f"{'':<{width}}  {'cautious':^22}  {'aggressive':^22}")
    head = f"{'succ':>5} {'drop':>4} {'time':>5}"
    print(f"{'split':<{width}}  {head:>22}  {head:>22}  errors")
    for split in splits:
        cells = [results[split, style] for style in STYLES]
        errors = sum(c.physics_errors for c in cells)
        print(f"{split:<{width}}  {cells[0].cell():>22}  {cells[1].cell():>22}  {errors}")
    ci = 1.96 * math.sqrt(0.25 / max(args.episodes, 1))
    print(f"time: mean seconds to success; 95% half-width of a rate near 50%: +-{ci:.0%}")


if __name__ == "__main__":
    main()
