"""The domain: aggregates, events, values and the Ledger application. Imports
nothing else of billtrail's."""
