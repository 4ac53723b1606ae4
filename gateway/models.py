"""Every table of the gateway, gathered for Alembic and for tests."""

from sqlalchemy import MetaData
from sqlmodel import SQLModel

from gateway.audit.models import AuditCheckpoint, AuditHead, AuditRecord, AuditSigningKey
from gateway.auth.models import CasbinRule
from gateway.defi.events_models import DefiEventCursor
from gateway.defi.lending_models import DefiLendingAction
from gateway.defi.models import DefiKey, DefiSwap
from gateway.defi.vault_models import DefiVault
from gateway.federated.models import Federation, FederationMember
from gateway.fx.models import (
    CashBalance,
    HedgeExecution,
    HedgePosition,
    Portfolio,
    Position,
    UnsettledTrade,
)
from gateway.jobs.models import Job
from gateway.marketdata.models import TenantDataFile
from gateway.marketdata.state_models import (
    MarketHalt,
    MarketStateVersion,
    ShortSaleDesignation,
    ShortSaleRestrictionRow,
)
from gateway.marketplace.install_models import (
    PluginInstallation,
    PluginInstallationEvent,
    PluginRating,
    PluginUsage,
    TenantBuiltinPlugin,
)
from gateway.marketplace.models import Plugin, PluginVersion, Vendor
from gateway.outbox import OutboxRow
from gateway.reports.models import ReportFile
from gateway.strategies.models import Backtest, DecisionExplanation, Strategy, StrategyVersion
from gateway.strategies.news_models import NewsAnalysis
from gateway.strategies.synthesis_models import SynthesisRun
from gateway.tenancy.models import (
    ApiKey,
    RoleGrantRequest,
    Tenant,
    TrustedDocument,
    User,
    VendorRoleRequest,
)
from gateway.trading.models import (
    AccountPosition,
    ComplianceControlsRow,
    ComplianceDecisionRow,
    ComplianceRuleSet,
    Execution,
    Locate,
    Order,
    OrderEvent,
    OrderStreamHead,
    TradingAccount,
)

__all__ = [
    "AccountPosition",
    "ApiKey",
    "AuditCheckpoint",
    "AuditHead",
    "AuditRecord",
    "AuditSigningKey",
    "Backtest",
    "CasbinRule",
    "CashBalance",
    "ComplianceControlsRow",
    "ComplianceDecisionRow",
    "ComplianceRuleSet",
    "DecisionExplanation",
    "DefiEventCursor",
    "DefiKey",
    "DefiLendingAction",
    "DefiSwap",
    "DefiVault",
    "Execution",
    "Federation",
    "FederationMember",
    "HedgeExecution",
    "HedgePosition",
    "Job",
    "Locate",
    "MarketHalt",
    "MarketStateVersion",
    "NewsAnalysis",
    "Order",
    "OrderEvent",
    "OrderStreamHead",
    "OutboxRow",
    "Plugin",
    "PluginInstallation",
    "PluginInstallationEvent",
    "PluginRating",
    "PluginUsage",
    "PluginVersion",
    "Portfolio",
    "Position",
    "ReportFile",
    "RoleGrantRequest",
    "ShortSaleDesignation",
    "ShortSaleRestrictionRow",
    "Strategy",
    "StrategyVersion",
    "SynthesisRun",
    "Tenant",
    "TenantBuiltinPlugin",
    "TenantDataFile",
    "TradingAccount",
    "TrustedDocument",
    "UnsettledTrade",
    "User",
    "Vendor",
    "VendorRoleRequest",
    "metadata",
]


def metadata() -> MetaData:
    return SQLModel.metadata
