"""Run one tiny stage under torchrun and save every rank's final parameters, run id and whether it
resumed its environments (for tests/test_train.py)."""
import sys, torch, torch.distributed as dist
from g1track.config import compose
from g1track.train import train

out, overrides = sys.argv[1], sys.argv[2:]
result = train(compose(overrides))
rank = dist.get_rank() if dist.is_initialized() else 0
torch.save({"params": {k: v.detach().cpu() for k, v in result["policy"].state_dict().items()},
            "run_id": result["run_id"], "resumed_env": result["resumed_env"]}, f"{out}/rank{rank}.pt")
if dist.is_initialized(): dist.destroy_process_group()
