"""Client library: `BudgetClient` (async) and `SyncBudgetClient`, one method per op.

    async with BudgetClient() as budget:
        await budget.record(component="rhetor", model="gpt-4o", input_tokens=1200, output_tokens=300)

    with SyncBudgetClient() as budget:
        print(budget.status().totals.cost_usd)

Both connect to the default socket (or `socket=`, or `BUDGETD_SOCKET`),
reconnect when the daemon restarts, and retry safely: every write carries an
idempotency key, so a retried write is charged once. Only msgspec and anyio
are imported, so a component that records usage starts fast.
"""

from budgetd.client._async import BudgetClient
from budgetd.client._errors import BudgetError, DaemonUnavailable
from budgetd.client._guard import BudgetDenied, Guard
from budgetd.client._lease import Lease
from budgetd.client._sync import SyncBudgetClient
from budgetd.model import BudgetSpec, Estimate, Need, Usage, UsagePatch
from budgetd.protocol import Event

__all__ = [
    "BudgetClient", "SyncBudgetClient", "BudgetError", "BudgetDenied", "DaemonUnavailable", "Guard", "Lease",
    "Usage", "UsagePatch", "Estimate", "BudgetSpec", "Need", "Event",
]

# Our classes say they are budgetd.client's (in reprs, tracebacks and pickles), wherever they are written.
for _cls in (BudgetClient, SyncBudgetClient, DaemonUnavailable, BudgetDenied, Guard, Lease):
    _cls.__module__ = __name__
del _cls
