"""Time litellm's own BudgetManager.update_cost per record (run in a process of its own)."""

import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")


def main(n: int) -> None:
    os.chdir(tempfile.mkdtemp())  # BudgetManager writes user_cost.json into the working directory
    import litellm
    from litellm import BudgetManager, ModelResponse

    manager = BudgetManager(project_name="bench")
    manager.create_budget(total_budget=1e9, user="bench-user")
    response = ModelResponse(model="gpt-4o", usage={"prompt_tokens": 1000, "completion_tokens": 500,
                                                    "total_tokens": 1500})
    times = []
    for _ in range(n):
        start = time.perf_counter()
        manager.update_cost(user="bench-user", completion_obj=response)
        times.append(time.perf_counter() - start)
    del litellm
    print(json.dumps({"p50_us": statistics.median(times) * 1e6, "per_s": n / sum(times)}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
