"""Built-in pre-trade compliance rule packs: one plugin per jurisdiction.

    us  SEC, FINRA, CFTC     eu  ESMA and national authorities (MiFID II, the EEA)
    uk  FCA                  jp  JFSA        hk  SFC        sg  MAS        au  ASIC

Each module is a plugin (its own `alphintra_compliance_rule_packs`), so one can be left out
or fail without taking the others along. Each pack is the shared rules (`rules.py`) followed
by its jurisdiction's own; `validators.py` holds the ISIN and LEI check digits and `codes.py`
every denial code. Which packs run for an order is the gateway's decision
(gateway/compliance/jurisdictions.py); every pack that runs must pass.
"""
