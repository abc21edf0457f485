"""The allocator: budgets, window counters, holds, admission and routing (see `actor`).

Callers use the messages in `actors.allocator.messages`.
"""

from actors.allocator.actor import Allocator  # noqa: F401
from actors.allocator.admission import AdmissionRules  # noqa: F401
from actors.allocator.messages import (  # noqa: F401 - the inbox is the public face
    BudgetDeleteMsg,
    BudgetGetMsg,
    BudgetListMsg,
    BudgetSetMsg,
    BudgetsNow,
    CheckMsg,
    CommitMsg,
    CountHolds,
    ForecastsMsg,
    ModelKeyMsg,
    RecordUsage,
    ReleaseMsg,
    ReserveMsg,
    RouteMsg,
    StatesMsg,
)
