"""The ``bill.closed`` event models live in the contract; re-exported here for the SEPAS code."""

from adapter.events.contract import (  # noqa: F401
    BillClosed,
    BillClosedEvent,
    BillDiagnosis,
    BillInsurance,
    BillOtherCost,
    BillService,
)
