"""One rank of a two-process gloo group for test_deadrun: feeds each scenario's batches of its rank to a fresh
dead-run detector and says how each ended. Imported for rank 0, run as a script for rank 1."""

from __future__ import annotations

import datetime
import json
import sys
from types import SimpleNamespace


def run_rank(rank: int, rendezvous: str, plan: str) -> list[str]:
    import torch
    import torch.distributed as dist

    from components.training import deadrun

    signatures = {deadrun.NON_FINITE_CAUSES: "non-finite", deadrun.ALL_ZERO_CAUSES: "all zero",
                  deadrun.ZERO_BOX_CAUSES: "zero box"}
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    outcomes = []
    try:
        for per_rank in json.loads(plan):
            detector = deadrun.DeadRunDetector(window_steps=3)
            try:
                for box, cls, dfl in per_rank[rank]:
                    detector.count_optimizer_step()
                    detector.on_train_batch_end(SimpleNamespace(loss_items={
                        "box_loss": torch.tensor(box), "cls_loss": torch.tensor(cls), "dfl_loss": torch.tensor(dfl)}))
                outcomes.append(f"{'judged' if detector.judged else 'undecided'} after {detector.steps}")
            except deadrun.DeadRunError as error:
                signature = next(name for causes, name in signatures.items() if str(error).startswith(causes))
                outcomes.append(f"{signature} after {error.steps}")
    finally:
        dist.destroy_process_group()
    return outcomes


if __name__ == "__main__":
    print(json.dumps(run_rank(int(sys.argv[1]), sys.argv[2], sys.argv[3])))
